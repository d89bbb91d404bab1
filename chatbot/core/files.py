"""Write a folder or a file beside where it goes, then rename it into place; tell folders' versions apart.

A reader (the registry, the model cache, a resumed training run) then sees the old
version or the new one whole, never half of one, whatever stops the writer: a failed
write leaves only a hidden staging name behind, removed on the way out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(target: Path, *, replace: bool = False, keep_existing: bool = False) -> Iterator[Path]:
    """An empty staging folder beside `target` that becomes `target` when the block ends without error.

    With `replace`, an existing `target` is swapped out and deleted. Otherwise renaming over a
    non-empty `target` raises `OSError` (a user's folder), unless `keep_existing` says that such a
    `target` is a cache another process finished first: then it stays, and this copy is dropped.
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
            try:
                os.replace(staging, target)
            except OSError:
                if not (keep_existing and target.is_dir() and any(target.iterdir())):
                    raise
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


def files_fingerprint(folder: Path, suffixes: tuple[str, ...], *, recursive: bool = False) -> str:
    """A hash of the names, sizes and modification times of `folder`'s files ending in `suffixes`.

    Not their contents: re-saving weights over a folder changes it at once, and hashing gigabytes
    each time a model is opened would not be cheap.
    """
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in found if p.is_file() and p.suffix in suffixes)
    listing = [[p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
