"""Keyword (sparse) vectors for hybrid retrieval, computed here so nothing downloads a model.

A chunk's vector holds `1 + ln(tf)` per hashed term; Qdrant's IDF modifier on the
collection supplies the inverse document frequency at query time, so adding
documents never forces old vectors to be recomputed. Hashing to 32 bits makes
collisions rare enough to ignore at knowledge-base scale.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from hashlib import blake2b

_WORD = re.compile(r"\w+")
STOP_WORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its my no not of on or "
    "our so that the their then there these this to was we what when where which who why will with you your".split()
)


def terms(text: str) -> list[str]:
    """The lower-cased words of `text` that carry meaning for keyword matching."""
    return [word for word in _WORD.findall(text.lower()) if word not in STOP_WORDS]


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
