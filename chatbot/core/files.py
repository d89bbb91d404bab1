"""Write a folder or a file beside where it goes, then rename it into place.

A reader (the registry, the model cache, a resumed training run) then sees the old
version or the new one whole, never half of one, whatever stops the writer: a failed
write leaves only a hidden staging name behind, removed on the way out.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """An empty staging folder beside `target` that becomes `target` when the block ends without error.

    With `replace`, an existing `target` is swapped out and deleted; without it, renaming over
    a non-empty `target` raises `OSError` (another writer finished first, or a user's folder).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _unique(target)
    staging.mkdir()  # with the umask's permissions, as the folder it becomes should have
    try:
        yield staging
        if replace and target.exists():
            old = _unique(target)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `path` through a hidden, uniquely named file beside it, so no reader sees half of it."""
    staging = _unique(path)
    try:
        with staging.open("x", encoding="utf-8") as file:  # "x": never another writer's file
            file.write(text)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def _unique(path: Path) -> Path:
    # Hidden, beside `path`, and unique to this call: two writers never share a staging name.
    return path.with_name(f".{path.name}-{uuid.uuid4().hex[:12]}.tmp")
