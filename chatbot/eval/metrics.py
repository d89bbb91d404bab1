"""The evaluation's measures: pure functions of one answer, and their means over a configuration.

Every measure is cheap and explainable in one line (the `METRICS` table carries that
line into the report), at the price of being lexical: "groundedness" counts shared
words, not entailment, so a paraphrase scores low and a copied-but-wrong sentence
scores high. With a 135M generator that is the honest trade: an LLM judge of the same
size would be noise, and a bigger one is not in the box.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chatbot.rag.postprocess import cited_numbers
from chatbot.rag.sparse import terms

_CITATION = re.compile(r"\[\d+\]")
HIT_DEPTH = 5


DECIMALS = {"share": 2, "seconds": 2, "count": 0}  # how many decimals each unit is shown with


@dataclass(frozen=True)
class Metric:
    """One column of the report: its key, header, which way is better, and how it is computed."""

    key: str
    header: str
    better: str | None  # "high", "low", or None when neither is better (tokens)
    unit: str  # "share" (0..1), "seconds" or "count"
    how: str

    def rounded(self, value: float | None) -> float | None:
        """The value as the report shows it."""
        return None if value is None else round(value, DECIMALS[self.unit])

    def shown(self, value: float | None) -> str:
        """The value as text; blank where the metric does not apply."""
        return "" if value is None else f"{value:.{DECIMALS[self.unit]}f}"

    def best(self, values: Iterable[float | None]) -> float | None:
        """The best of `values` as shown (two that print the same tie), or None when there is nothing to prefer."""
        present = {self.rounded(value) for value in values if value is not None}
        if self.better is None or len(present) < 2:
            return None
        return max(present) if self.better == "high" else min(present)


METRICS = (
    Metric("hit@1", "hit@1", "high", "share", "retrieval: share of answerable questions whose top passage is from a `source`"),
    Metric("hit@5", "hit@5", "high", "share", "retrieval: share with a passage from a `source` in the top 5"),
    Metric("mrr", "MRR@5", "high", "share", "retrieval: mean of 1/rank of the first passage from a `source` (0 if not in the top 5)"),
    Metric("all@5", "all@5", "high", "share", "retrieval: share whose every `source` has a passage in the top 5 (multi-source questions)"),
    Metric("recall", "recall", "high", "share", "mean share of `must_include` terms found in the answer, case-insensitively (answerable questions; an engine abstention scores 0)"),
    Metric("refusal_acc", "refuses unanswerable", "high", "share", "share of unanswerable questions answered with a refusal (the engine abstained, or `is_refusal` matched the text)"),
    Metric("false_refusal", "false refusals", "low", "share", "share of answerable questions answered with a refusal"),
    Metric("grounded", "grounded", "high", "share", "mean share of an answer's content words (stopwords and [n] markers removed) that occur in the passages it was given; refusals excluded, blank without retrieval"),
    Metric("cite_valid", "valid citations", "high", "share", "of answers whose own text cites [n], the share where every n numbers a passage it was given (engine-added citations excluded)"),
    Metric("cite_source", "cites source", "high", "share", "of answers to answerable questions that cite a passage (engine-added included), the share citing one from a `source`"),
    Metric("latency_p50", "p50 s", "low", "seconds", "median wall time of one `engine.answer` call, retrieval included"),
    Metric("latency_p95", "p95 s", "low", "seconds", "95th percentile of that wall time (linear interpolation)"),
    Metric("tokens", "tokens", None, "count", "mean tokens generated per answer that generated (abstentions excluded)"),
)  # fmt: skip
RETRIEVAL_KEYS = ("hit@1", "hit@5", "mrr", "all@5")


def term_recall(text: str, must_include: Sequence[str]) -> float | None:
    """Share of `must_include` terms found in `text`, case-insensitively; None when there are none."""
    if not must_include:
        return None
    lowered = text.lower()
    return sum(term.lower() in lowered for term in must_include) / len(must_include)


def groundedness(text: str, passages: Sequence[str]) -> float | None:
    """Share of the content words of `text` (citations removed) that occur in `passages`; None if unmeasurable."""
    words = terms(_CITATION.sub(" ", text))
    if not words or not passages:
        return None
    vocabulary = {word for passage in passages for word in terms(passage)}
    return sum(word in vocabulary for word in words) / len(words)


def own_citations(text: str, added: Sequence[int]) -> list[int]:
    """The passage numbers the model itself cited: the engine appends its own as a final ' [n] [m]'."""
    suffix = " " + " ".join(f"[{n}]" for n in added)
    if added and text.endswith(suffix):
        text = text[: -len(suffix)]
    return cited_numbers(text)


def first_rank(retrieved: Sequence[str], expected: Iterable[str]) -> int | None:
    """1-based rank of the first retrieved source that is one of `expected`, or None."""
    expected = set(expected)
    return next((rank for rank, source in enumerate(retrieved, 1) if source in expected), None)


def retrieval_scores(retrieved: Sequence[str], expected: Sequence[str]) -> dict[str, float]:
    """hit@1, hit@5, reciprocal rank (within 5) and all-sources-in-top-5 of one question's retrieval."""
    top = list(retrieved[:HIT_DEPTH])
    rank = first_rank(top, expected)
    return {
        "hit@1": float(rank == 1),
        "hit@5": float(rank is not None),
        "mrr": 1 / rank if rank else 0.0,
        "all@5": float(set(expected) <= set(top)),
    }


def mean(values: Iterable[float | bool | None]) -> float | None:
    """Mean of the values that are not None, or None when none are."""
    present = [float(value) for value in values if value is not None]
    return sum(present) / len(present) if present else None


def percentile(values: Sequence[float], share: float) -> float | None:
    """The `share` quantile (0..1, to a whole percent) interpolated linearly between ranks; None for no values."""
    if len(values) < 2:  # statistics.quantiles wants two values (before Python 3.13)
        return float(values[0]) if values else None
    # The inclusive method is linear interpolation between ranks (numpy's default); its 99 cut points lie
    # between the minimum (0%) and the maximum (100%).
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [min(values), *cuts, max(values)][round(share * 100)]


__all__ = [
    "METRICS",
    "Metric",
    "first_rank",
    "groundedness",
    "mean",
    "own_citations",
    "percentile",
    "retrieval_scores",
    "term_recall",
]
