"""What the store's engines exchange: chunks going in, matches coming out, and which points an update touches.

Shared by `store` and the engines behind it (`_client`, `_edge`), so none of them imports another's module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DENSE = "dense"
SPARSE = "sparse"
FILE = "file"


@dataclass(frozen=True)
class Match:
    """A stored chunk a search found: its id, the search's score, its payload and dense vector."""

    id: str
    score: float
    payload: dict[str, Any]
    dense: list[float]


@dataclass(frozen=True)
class ChunkPoint:
    """One chunk ready to store: its id, vectors and payload."""

    id: str
    dense: Sequence[float]
    sparse: tuple[list[int], list[float]]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Selector:
    """Which points an update or a search touches, in words every engine translates to its own filter.

    Each `match` key must take one of its values; `missing` names a payload key the point must not
    have; points whose id is in `keep_ids` are left out.
    """

    match: tuple[tuple[str, tuple[str, ...]], ...] = ()
    missing: str | None = None
    keep_ids: tuple[str, ...] = ()


def select(where: Mapping[str, Iterable[str]] | None) -> Selector | None:
    """The selector for `where` (payload key -> values it may take); keys with no values do not narrow."""
    match = tuple((key, tuple(sorted(set(values)))) for key, values in (where or {}).items() if values)
    return Selector(match=match) if match else None


__all__ = ["DENSE", "FILE", "SPARSE", "ChunkPoint", "Match", "Selector", "select"]
