"""The arena's votes in one SQLite file under `RAG_CACHE_DIR`, safe with many sessions voting at once.

SQLite through the standard library: the Streamlit server runs every browser session in
its own thread, and a user may run two servers over one cache folder, so writers meet.
WAL mode lets readers go on while one writes, the busy timeout makes a second writer
wait instead of failing, and each vote is one `BEGIN IMMEDIATE` transaction on its own
connection, so no vote is lost or half written. The whole vote is kept as one JSON
column (versioned), with the few fields a query needs beside it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from chatbot.eval.votes import Vote, VoteStoreError, read_jsonl, to_jsonl

if TYPE_CHECKING:
    from chatbot.core.config import Settings

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


def load_votes(path: str | Path) -> list[Vote]:
    """Votes from a jsonl export or straight from a votes.sqlite file."""
    path = Path(path)
    if path.suffix in (".sqlite", ".db"):
        if not path.is_file():
            raise VoteStoreError(f"Votes file {path} does not exist: vote on the Arena page first.")
        return VoteStore(path).all()
    return read_jsonl(path)


__all__ = ["VoteStore", "load_votes", "votes_path"]
