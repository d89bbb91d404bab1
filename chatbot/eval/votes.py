"""Arena votes: one blind comparison of two configurations on one question, and its jsonl form.

A vote carries everything needed to trace it and ask again: the question, both answers
(text and the passages each was given), both configurations as `AnswerOptions` JSON,
which one was shown as A, the model's weights, each adapter's identity and the
collection's fingerprint, the same identities `rag-eval` keys its answer cache by.
`chatbot.eval.vote_store` keeps them in SQLite.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.core.errors import RagtuneError
from chatbot.eval.report import Result
from chatbot.eval.run import adapter_identity, run_identity
from chatbot.options import AnswerOptions
from chatbot.rag.retrieval import Hit

if TYPE_CHECKING:
    from chatbot.answer import Answer
    from chatbot.engine import ChatEngine

VOTE_VERSION = 1


class VoteStoreError(RagtuneError):
    """The votes file cannot be read or written, or an imported vote is malformed."""


class Outcome(StrEnum):
    """What the person voted: A better, B better, a tie, or both bad (a tie that says neither is good)."""

    A = "a"
    B = "b"
    TIE = "tie"
    BOTH_BAD = "both_bad"

    @property
    def score_a(self) -> float:
        """A's share of the win: ties and both-bad count as half a win each way."""
        return {Outcome.A: 1.0, Outcome.B: 0.0}.get(self, 0.5)


@dataclass(frozen=True)
class Side:
    """One of the two answers: its configuration, the adapter's identity, and the answer as the metrics need it."""

    options: dict[str, Any]  # AnswerOptions.to_json()
    adapter: str | None  # adapter_identity(): the folder's card time or file hash, or the served weights
    answer: dict[str, Any]  # text, abstained, citations_added, sources [{source, chunk_id, title, section, ...}]

    @property
    def label(self) -> str:
        """The configuration's label, as every page and report names it."""
        return self.options["label"]

    @property
    def config(self) -> AnswerOptions:
        """The configuration, to ask again with."""
        return AnswerOptions.from_json(self.options)

    @property
    def result(self) -> Result:
        """The answer as the evaluation's metrics read it."""
        answer = self.answer
        return Result(
            text=answer["text"],
            sources=tuple((hit["source"], hit.get("text", "")) for hit in answer["sources"]),
            abstained=answer["abstained"],
            citations_added=tuple(answer["citations_added"]),
            output_tokens=None,
            latency=sum(answer.get("timings", {}).values()),
        )

    @classmethod
    def of(cls, engine: ChatEngine, options: AnswerOptions, answer: Answer) -> Side:
        """The side for `answer`, produced by `engine` under `options`."""
        kept = ("source", "chunk_id", "title", "section", "score", "text")
        return cls(
            options=options.to_json(),
            adapter=adapter_identity(engine, options.adapter, served=options.served),
            answer={
                "text": answer.text,
                "abstained": answer.abstained,
                "citations_added": list(answer.citations_added),
                "sources": [{name: shown[name] for name in kept} for shown in map(Hit.to_json, answer.sources)],
                "timings": {name: round(seconds, 4) for name, seconds in answer.timings.items()},
            },
        )


@dataclass(frozen=True)
class Vote:
    """One blind vote; `a` and `b` are the answers as they were shown (A on the left)."""

    question: str
    a: Side
    b: Side
    outcome: Outcome
    model: dict[str, Any] = field(default_factory=dict)  # name and weights identity
    collection: dict[str, Any] = field(default_factory=dict)  # name, fingerprint, sources hash, chunks
    decoding: dict[str, Any] = field(default_factory=dict)  # top-k, thresholds, temperature...
    question_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", Outcome(self.outcome))

    def to_json(self) -> dict[str, Any]:
        """One JSON object (one line of the export)."""
        return {
            "version": VOTE_VERSION,
            "id": self.id,
            "time": self.time,
            "question": self.question,
            "question_id": self.question_id,
            "a": _side_json(self.a),
            "b": _side_json(self.b),
            "outcome": self.outcome.value,
            "model": self.model,
            "collection": self.collection,
            "decoding": self.decoding,
        }

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Vote:
        """The vote `to_json` wrote; a ValueError says what is missing or wrong."""
        if not isinstance(item, dict):
            raise ValueError(f"expected a JSON object, found {type(item).__name__}")
        if item.get("version") != VOTE_VERSION:
            raise ValueError(f"vote version {item.get('version')!r}: this ragtune reads version {VOTE_VERSION}")
        try:
            return cls(
                question=item["question"],
                a=Side(**{key: item["a"][key] for key in ("options", "adapter", "answer")}),
                b=Side(**{key: item["b"][key] for key in ("options", "adapter", "answer")}),
                outcome=Outcome(item["outcome"]),
                model=item.get("model", {}),
                collection=item.get("collection", {}),
                decoding=item.get("decoding", {}),
                question_id=item.get("question_id"),
                id=item["id"],
                time=item["time"],
            )
        except KeyError as missing:
            raise ValueError(f"missing {missing}") from None
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from None


def _side_json(side: Side) -> dict[str, Any]:
    return {"label": side.label, "options": side.options, "adapter": side.adapter, "answer": side.answer}


def record_vote(
    engine: ChatEngine,
    question: str,
    shown: tuple[tuple[AnswerOptions, Answer], tuple[AnswerOptions, Answer]],
    outcome: Outcome | str,
    *,
    question_id: str | None = None,
) -> Vote:
    """A vote on the two (options, answer) pairs as shown (A first), with the engine's identities."""
    identity = run_identity(engine)
    (options_a, answer_a), (options_b, answer_b) = shown
    return Vote(
        question=question,
        a=Side.of(engine, options_a, answer_a),
        b=Side.of(engine, options_b, answer_b),
        outcome=Outcome(outcome),
        model={"name": identity["model"], "weights": identity["weights"]},
        collection=identity["collection"],
        decoding=identity["decoding"],
        question_id=question_id,
    )


def changed_since(engine: ChatEngine, vote: Vote) -> list[str]:
    """What differs between the engine now and when `vote` was cast (empty: a re-run asks the same models)."""
    identity = run_identity(engine)
    now = {"model": {"name": identity["model"], "weights": identity["weights"]}, "collection": identity["collection"]}
    changed = [name for name in ("model", "collection") if now[name] != getattr(vote, name)]
    for letter, side in (("A", vote.a), ("B", vote.b)):
        if adapter_identity(engine, side.config.adapter, served=side.config.served) != side.adapter:
            changed.append(f"adapter of {letter}")
    return changed


def to_jsonl(votes: Iterable[Vote]) -> str:
    """Votes as JSON lines."""
    return "".join(json.dumps(vote.to_json(), ensure_ascii=False) + "\n" for vote in votes)


def read_jsonl(path: str | Path) -> list[Vote]:
    """The votes of a jsonl export, or a `VoteStoreError` naming the first bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise VoteStoreError(
            f"Cannot read votes from {path} ({error}): pass a .jsonl file from the Arena page's download."
        ) from None
    votes = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            votes.append(Vote.from_json(json.loads(line)))
        except ValueError as problem:  # json.JSONDecodeError is a ValueError
            raise VoteStoreError(f"{path}, line {number}: not a vote ({problem}).") from None
    return votes


__all__ = [
    "Outcome",
    "Side",
    "Vote",
    "VoteStoreError",
    "changed_since",
    "read_jsonl",
    "record_vote",
    "to_jsonl",
]
