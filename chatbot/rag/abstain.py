"""Abstention calibrated per collection: the cosine under which a question is taken as not covered.

A single constant cut (0.40, chosen on the sample) does not transfer: how close an
answerable question lands to its page depends on the embedder, on how long and
how alike the pages are, and on how many there are. So each collection gets its
own cut, set from the collection itself when it is ingested: questions made from
its own headings (which it surely covers) against a fixed list of questions no
product help centre covers. The cut sits at `ALPHA` of the way from the off-topic
questions' typical best cosine to the heading questions' typical one; `ALPHA`
is one number for every collection, chosen on the tuning halves of two
knowledge bases' question sets (bench/eval_retrieval.py). The record is stored
with the collection (`ABSTAIN_KEY`) and recomputed whenever ingestion changes it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatbot.core.text import heading_path

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from chatbot.rag.store import Store

ABSTAIN_KEY = "ragtune_abstain"
# The cut for a collection without a calibrated one (made before calibration existed): chosen on data/kb_qa.jsonl.
DEFAULT_THRESHOLD = 0.40
ALPHA = 0.35  # where the cut sits between off-topic (0) and heading questions (1): tuned, see the module doc
MAX_HEADINGS = 200  # questions from headings: enough for a stable median, few enough to embed in a second or two
# Questions far from any product's help centre, in a customer's register: what the cut must refuse at the least.
OFF_TOPIC = (
    "What is the capital of Australia?",
    "How long should I boil an egg for a runny yolk?",
    "Who won the football world cup in 2014?",
    "What's a good name for a golden retriever puppy?",
    "How do I get red wine out of a carpet?",
    "Can you recommend a good science fiction novel?",
    "What is the boiling point of water at high altitude?",
    "How many moons does Jupiter have?",
    "What's the best way to learn to play the guitar as an adult?",
    "Why is the sky blue?",
    "How do I repot a cactus without getting hurt?",
    "What should I pack for a week of hiking in the Alps?",
    "Is it safe to eat raw cookie dough?",
    "How do I tie a bow tie?",
    "What causes the northern lights?",
    "How much sleep does a teenager need?",
    "Which wine goes well with grilled salmon?",
    "How do you say thank you in Japanese?",
    "What's the difference between a crocodile and an alligator?",
    "How do I stop my cat scratching the sofa?",
    "When was the Eiffel Tower built?",
    "What's a healthy breakfast before running a marathon?",
    "How do I make sourdough starter from scratch?",
    "Who painted the ceiling of the Sistine Chapel?",
)


@dataclass(frozen=True)
class Calibration:
    """A collection's abstention cut and what it was set from."""

    threshold: float
    headings: float  # median best cosine of the questions made from headings
    off_topic: float  # median best cosine of the off-topic questions
    questions: int  # how many heading questions were asked
    alpha: float = ALPHA

    def to_json(self) -> dict[str, Any]:
        """The record stored with the collection."""
        return {
            "threshold": round(self.threshold, 4),
            "headings": round(self.headings, 4),
            "off_topic": round(self.off_topic, 4),
            "questions": self.questions,
            "alpha": self.alpha,
        }


def heading_questions(headings: Sequence[tuple[str, str]], limit: int = MAX_HEADINGS) -> list[str]:
    """One question per distinct (title, section) heading path, evenly sampled down to `limit`, in a stable order."""
    paths = sorted({heading_path(title, section) for title, section in headings if title or section})
    if len(paths) > limit:
        paths = [paths[round(n * (len(paths) - 1) / (limit - 1))] for n in range(limit)]
    return paths


def calibrate(
    store: Store, embeddings: Embeddings, headings: Sequence[tuple[str, str]], *, alpha: float = ALPHA
) -> Calibration | None:
    """The cut for this collection from its headings and the off-topic list; None with no headings."""
    questions = heading_questions(headings)
    if not questions:
        return None
    # Embedded as queries, which they stand for (an instruction-tuned embedder treats the two differently).
    vectors = [embeddings.embed_query(text) for text in [*questions, *OFF_TOPIC]]
    best = [_best_cosine(store, vector) for vector in vectors]
    on, off = statistics.median(best[: len(questions)]), statistics.median(best[len(questions) :])
    return Calibration(off + alpha * (on - off), on, off, len(questions), alpha)


def recalibrate(store: Store, embeddings: Embeddings, headings: Sequence[tuple[str, str]]) -> Calibration | None:
    """Calibrate and store the record with the collection (a collection left empty loses its record)."""
    found = calibrate(store, embeddings, headings) if store.count() else None
    store.set_metadata_value(ABSTAIN_KEY, found.to_json() if found else None)
    return found


def stored_threshold(store: Store) -> float | None:
    """The collection's calibrated cut, or None when it has none (made before calibration, or empty)."""
    record = store.metadata_value(ABSTAIN_KEY)
    return float(record["threshold"]) if isinstance(record, dict) and "threshold" in record else None


def threshold(store: Store) -> tuple[float, bool]:
    """The cut the engine abstains under for this collection, and whether it is the collection's own."""
    calibrated = stored_threshold(store)
    return (DEFAULT_THRESHOLD, False) if calibrated is None else (calibrated, True)


def _best_cosine(store: Store, vector: Sequence[float]) -> float:
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    query = [v / norm for v in vector]
    [match] = store.search_dense(query, limit=1)
    return sum(a * b for a, b in zip(query, match.dense, strict=True))
