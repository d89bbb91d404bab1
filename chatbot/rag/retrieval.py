"""retrieve: a question -> the stored chunks most likely to answer it, best first.

Two modes. *dense* ranks chunks by cosine similarity of sentence embeddings: it
matches meaning across wording ("cancel my plan" ~ "end your subscription") but
blurs exact tokens. *hybrid* also ranks them by keywords (sparse vectors, IDF
weighted by Qdrant) and fuses the two lists by reciprocal rank (RRF) inside
Qdrant's query API: an error code such as "PW-4021" or a product name then wins
even when the embedding barely notices it, at the price of a second list per query.
Measured by bench/eval_retrieval.py (bundled all-MiniLM-L6-v2, top 5, MRR@5):

    data/kb, 43 answerable questions     hit@1  hit@5  MRR     (MMR on: MRR)
    dense                                0.58   0.98   0.76    0.67
    hybrid                               0.72   1.00   0.85    0.67
    plausible help centre, 29 questions
    dense                                0.86   1.00   0.91    0.86
    hybrid                               0.83   0.97   0.89    0.87

Hybrid wins on data/kb (the sample product's error codes and plan names), so it
is the default; on Plausible the two are within one question of each other. MMR
(Qdrant's, diversity 0.5) is off by default: it swaps relevant chunks for merely
different ones and never helped, not even all-sources-in-top-5 on multi-page
questions. Qdrant's MMR ranks by dense similarity, so hybrid + MMR re-ranks the
fused candidates by embedding alone and loses what fusion gained. Hybrid costs a
keyword scan that local mode does in Python (~30-60 ms a query on ~1k chunks,
against ~4 ms for dense).
Whatever the mode, each hit carries `dense_score`, the cosine similarity of query
and chunk, because that scale (unlike RRF's rank-based score) means the same thing
from one question to the next: `score_threshold` and abstention are judged on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from chatbot.core.errors import InvalidOptionError, parse_choice
from chatbot.rag import sparse
from chatbot.rag.store import Match, Store

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

MIN_CANDIDATES = 20  # per list: fusion and MMR need more than k candidates to choose from
MMR_DIVERSITY = 0.5  # Qdrant's default: 0 is pure relevance, 1 pure novelty


class RetrievalMode(StrEnum):
    """How chunks are ranked: by embedding alone, or by embedding and keywords fused."""

    DENSE = "dense"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk, where it came from and how well it matched."""

    source: str
    title: str
    section: str
    score: float
    chunk_id: str
    text: str
    dense_score: float  # cosine similarity of query and chunk, whatever the mode (abstention uses it)
    page: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The DESIGN.md hit object, plus `dense_score` and `page` when set."""
        shown = {
            "source": self.source,
            "title": self.title,
            "section": self.section,
            "score": self.score,
            "chunk_id": self.chunk_id,
            "text": self.text,
            "dense_score": self.dense_score,
        }
        if self.page is not None:
            shown["page"] = self.page
        return shown


def parse_mode(value: RetrievalMode | str) -> RetrievalMode:
    """The mode named by `value`, or an error naming the choices."""
    return parse_choice(RetrievalMode, value, "retrieval mode")


class Retriever:
    """Finds the chunks of one collection that best match a query."""

    def __init__(
        self,
        store: Store,
        embeddings: Embeddings,
        *,
        mode: RetrievalMode | str = RetrievalMode.HYBRID,
        top_k: int = 4,
        score_threshold: float | None = None,
        mmr: bool = False,
    ) -> None:
        self.store = store
        self.embeddings = embeddings
        self.mode = parse_mode(mode)
        self.top_k = _check_k(top_k)
        self.score_threshold = score_threshold
        self.mmr = mmr

    def retrieve(
        self,
        query: str,
        *,
        k: int | None = None,
        mode: RetrievalMode | str | None = None,
        sources: Sequence[str] | None = None,
        sections: Sequence[str] | None = None,
        score_threshold: float | None = None,
        mmr: bool | None = None,
    ) -> list[Hit]:
        """Up to `k` hits, best first; per-call arguments override the retriever's defaults."""
        mode = self.mode if mode is None else parse_mode(mode)
        k = self.top_k if k is None else _check_k(k)
        threshold = self.score_threshold if score_threshold is None else score_threshold
        use_mmr = self.mmr if mmr is None else mmr
        vector = _normalised(self.embeddings.embed_query(query))
        matches = self.store.search(
            vector,
            sparse.query_vector(query) if mode is RetrievalMode.HYBRID else None,
            limit=k,
            candidates=max(4 * k, MIN_CANDIDATES),
            where={"source": sources or (), "section": sections or ()},
            diversity=MMR_DIVERSITY if use_mmr else None,
        )
        hits = [_hit(match, vector) for match in matches]
        return [hit for hit in hits if threshold is None or hit.dense_score >= threshold]


def _hit(match: Match, query: list[float]) -> Hit:
    payload = match.payload
    # Stored cosine vectors are unit length, so a dot product is the cosine similarity.
    dense_score = sum(a * b for a, b in zip(query, match.dense, strict=True))
    return Hit(
        source=payload["source"],
        title=payload.get("title", ""),
        section=payload.get("section", ""),
        score=match.score,
        chunk_id=match.id,
        text=payload.get("text", ""),
        dense_score=dense_score,
        page=payload.get("page"),
    )


def _normalised(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidOptionError(f"k={k!r} is not allowed: expected a whole number of hits, 1 or more.")
    return k


__all__ = ["Hit", "RetrievalMode", "Retriever", "parse_mode"]
