"""Test doubles that are real implementations of the interfaces they stand in for."""

from __future__ import annotations

import math
import re
from hashlib import blake2b

from langchain_core.embeddings import Embeddings


class FakeEmbeddings(Embeddings):
    """Deterministic bag-of-words vectors: texts sharing words point the same way. Records what it embedded."""

    def __init__(self, dim: int = 16, *, fail_on_call: int | None = None) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        for word in re.findall(r"\w+", text.lower()):
            vector[int.from_bytes(blake2b(word.encode(), digest_size=2).digest(), "big") % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt  # stands in for Ctrl-C (or a kill) between two batches
        return [self._vector(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)

    @property
    def embedded(self) -> list[str]:
        return [text for call in self.calls for text in call]


def count_words(text: str) -> int:
    """A token counter for tests: one token per word or punctuation mark."""
    return len(re.findall(r"\w+|[^\w\s]", text))
