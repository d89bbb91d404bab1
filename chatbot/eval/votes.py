"""Arena votes: one blind comparison of two configurations on one question, and the SQLite file that keeps them.

A vote carries everything needed to trace it and ask again: the question, both answers
(text and the passages each was given), both configurations as `AnswerOptions` JSON,
which one was shown as A, the model's weights, each adapter's identity and the
collection's fingerprint, the same identities `rag-eval` keys its answer cache by.

The store is SQLite through the standard library, one file under `RAG_CACHE_DIR`: the
Streamlit server runs every browser session in its own thread, and a user may run two
servers over one cache folder, so writers meet. WAL mode lets readers go on while one
writes, the busy timeout makes a second writer wait instead of failing, and each vote
is one `BEGIN IMMEDIATE` transaction on its own connection, so no vote is lost or half
written. The whole vote is kept as one JSON column (versioned), with the few fields a
query needs beside it.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
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
    from chatbot.core.config import Settings
    from chatbot.engine import ChatEngine

VOTE_VERSION = 1
BUSY_SECONDS = 30.0  # how long a writer waits for another one's transaction before giving up
SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    question TEXT NOT NULL,
    label_a TEXT NOT NULL,
    label_b TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad')),
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_time ON votes (time);
"""


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


def votes_path(settings: Settings) -> Path:
    """Where the arena's votes live: `$RAG_CACHE_DIR/arena/votes.sqlite`."""
    return settings.cache_dir / "arena" / "votes.sqlite"


class VoteStore:
    """The votes in one SQLite file; safe for many threads and processes (one connection per call)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                connection.execute("PRAGMA journal_mode=WAL")  # kept in the file: set once, holds for every connection
                connection.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise self._error("open", error) from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: no implicit transactions, so each write is exactly the BEGIN ... COMMIT below.
        with closing(sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)) as connection:
            connection.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
            yield connection

    def _error(self, doing: str, error: Exception) -> VoteStoreError:
        return VoteStoreError(
            f"Cannot {doing} the votes file {self.path} ({error}): point RAG_CACHE_DIR at a writable local folder "
            "(SQLite's locking does not work on network drives)."
        )

    def add(self, vote: Vote) -> bool:
        """Store `vote` in one transaction; False when a vote with its id is already there (an import re-run)."""
        return self.add_many([vote]) == 1

    def add_many(self, votes: Iterable[Vote]) -> int:
        """Store `votes` in one transaction, skipping ids already stored; how many were new."""
        rows = [
            (
                v.id,
                v.time,
                v.question,
                v.a.label,
                v.b.label,
                v.outcome.value,
                json.dumps(v.to_json(), ensure_ascii=False),
            )
            for v in votes
        ]
        try:
            with self._connect() as connection:
                connection.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
                try:
                    before = connection.total_changes
                    connection.executemany("INSERT OR IGNORE INTO votes VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                    added = connection.total_changes - before
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
        except sqlite3.Error as error:
            raise self._error("write to", error) from None
        return added

    def all(self) -> list[Vote]:
        """Every vote, oldest first."""
        try:
            with self._connect() as connection:
                records = connection.execute("SELECT record FROM votes ORDER BY time, rowid").fetchall()
        except sqlite3.Error as error:
            raise self._error("read", error) from None
        return [Vote.from_json(json.loads(record)) for (record,) in records]

    def count(self) -> int:
        """How many votes are stored."""
        try:
            with self._connect() as connection:
                return connection.execute("SELECT count(*) FROM votes").fetchone()[0]
        except sqlite3.Error as error:
            raise self._error("read", error) from None

    def export_jsonl(self) -> str:
        """Every vote as JSON lines, oldest first."""
        return to_jsonl(self.all())

    def import_jsonl(self, path: str | Path) -> int:
        """Add the votes of a jsonl export (those already stored are skipped); how many were new."""
        return self.add_many(read_jsonl(path))


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


def load_votes(path: str | Path) -> list[Vote]:
    """Votes from a jsonl export or straight from a votes.sqlite file."""
    path = Path(path)
    if path.suffix in (".sqlite", ".db"):
        if not path.is_file():
            raise VoteStoreError(f"Votes file {path} does not exist: vote on the Arena page first.")
        return VoteStore(path).all()
    return read_jsonl(path)


__all__ = [
    "Outcome",
    "Side",
    "Vote",
    "VoteStore",
    "VoteStoreError",
    "changed_since",
    "load_votes",
    "read_jsonl",
    "record_vote",
    "to_jsonl",
    "votes_path",
]
