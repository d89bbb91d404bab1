"""Write a folder or a file beside where it goes, then rename it into place.

A reader (the registry, the model cache, a resumed training run) then sees the old
version or the new one whole, never half of one, whatever stops the writer: a failed
write leaves only a hidden staging name behind, removed on the way out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
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
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        if replace and target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `path` through a hidden, uniquely named file beside it, so no reader sees half of it."""
    descriptor, staging = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(staging, path)
    finally:
        Path(staging).unlink(missing_ok=True)
