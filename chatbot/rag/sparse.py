"""Keyword (sparse) vectors for hybrid retrieval, computed here so nothing downloads a model.

A chunk's vector holds `1 + ln(tf)` per hashed term; Qdrant's IDF modifier on the
collection supplies the inverse document frequency at query time, so adding
documents never forces old vectors to be recomputed. Hashing to 32 bits makes
collisions rare enough to ignore at knowledge-base scale.

Terms are Snowball (English) stems, so a customer's "cancelled my subscriptions"
meets a page's "cancel your subscription": without stemming, keyword matching
rewards the page's own wording and misses the customer's. Stemming changes the
stored vectors, so `SCHEME` names the scheme and goes into the collection's
fingerprint: a collection built with another scheme asks to be re-ingested.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from functools import lru_cache
from hashlib import blake2b

import snowballstemmer

SCHEME = "snowball-en-1"  # bump whenever `terms` or the vectors change: stored vectors must be rebuilt
_WORD = re.compile(r"\w+")
STOP_WORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its my no not of on or "
    "our so that the their then there these this to was we what when where which who why will with you your".split()
)
_local = threading.local()  # a Snowball stemmer keeps state while it stems: one per thread


def terms(text: str) -> list[str]:
    """The stems of the lower-cased words of `text` that carry meaning for keyword matching."""
    return [stem(word) for word in _WORD.findall(text.lower()) if word not in STOP_WORDS]


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball English stem of a lower-cased word ("cancelled" -> "cancel")."""
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer.stemWord(word)


def term_index(term: str) -> int:
    """A stable 32-bit index for a term (the same in every process, unlike `hash`)."""
    return int.from_bytes(blake2b(term.encode(), digest_size=4).digest(), "big")


def document_vector(text: str) -> tuple[list[int], list[float]]:
    """Sparse vector of a chunk: sublinear term frequency per term."""
    counts = Counter(term_index(term) for term in terms(text))
    indices = sorted(counts)
    return indices, [1.0 + math.log(counts[i]) for i in indices]


def query_vector(text: str) -> tuple[list[int], list[float]]:
    """Sparse vector of a query: each distinct term once (IDF does the weighting)."""
    indices = sorted({term_index(term) for term in terms(text)})
    return indices, [1.0] * len(indices)
