"""Keyword (sparse) vectors for hybrid retrieval, computed here so nothing downloads a model.

A chunk's vector holds `1 + ln(tf)` per hashed term; Qdrant's IDF modifier on the
collection supplies the inverse document frequency at query time, so adding
documents never forces old vectors to be recomputed. Hashing to 32 bits makes
collisions rare enough to ignore at knowledge-base scale.

Terms are the words themselves. `stem=True` makes them Snowball (English) stems,
so "cancelled my subscriptions" meets "cancel your subscription"; measured on the
tuning halves of two knowledge bases (bench/eval_retrieval.py --sweep) stemmed
vectors did not beat plain words under the default fusion (RRF), so they are not
the default. The vectors' scheme goes into the collection's fingerprint (`SCHEME`):
change it, and a collection built with another scheme asks to be re-ingested.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from functools import lru_cache
from hashlib import blake2b

import snowballstemmer

SCHEME = "1"  # bump whenever `terms` or the vectors change: stored vectors must be rebuilt
_WORD = re.compile(r"\w+")
STOP_WORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its my no not of on or "
    "our so that the their then there these this to was we what when where which who why will with you your".split()
)
_local = threading.local()  # a Snowball stemmer keeps state while it stems: one per thread


def terms(text: str, *, stem: bool = False) -> list[str]:
    """The lower-cased words of `text` that carry meaning for keyword matching (their stems with `stem`)."""
    words = [word for word in _WORD.findall(text.lower()) if word not in STOP_WORDS]
    return [stem_word(word) for word in words] if stem else words


@lru_cache(maxsize=65536)
def stem_word(word: str) -> str:
    """The Snowball English stem of a lower-cased word ("cancelled" -> "cancel")."""
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer.stemWord(word)


def term_index(term: str) -> int:
    """A stable 32-bit index for a term (the same in every process, unlike `hash`)."""
    return int.from_bytes(blake2b(term.encode(), digest_size=4).digest(), "big")


def document_vector(text: str, *, stem: bool = False) -> tuple[list[int], list[float]]:
    """Sparse vector of a chunk: sublinear term frequency per term."""
    counts = Counter(term_index(term) for term in terms(text, stem=stem))
    indices = sorted(counts)
    return indices, [1.0 + math.log(counts[i]) for i in indices]


def query_vector(text: str, *, stem: bool = False) -> tuple[list[int], list[float]]:
    """Sparse vector of a query: each distinct term once (IDF does the weighting)."""
    indices = sorted({term_index(term) for term in terms(text, stem=stem)})
    return indices, [1.0] * len(indices)
