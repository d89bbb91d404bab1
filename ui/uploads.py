"""Files uploaded on the Knowledge base page: checked on the server, then written inside the knowledge base only.

The browser's own type and size checks are a convenience, not a guarantee: a crafted
request can send any name and any size. So every rule is enforced here: a plain file
name (no folders, no hidden files), an allowed type, at most `MAX_UPLOAD_BYTES`, and a
target that resolves inside the uploads folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from chatbot.core.errors import RagtuneError

KB_DIR = Path("data/kb")  # the folder `rag-ingest data/kb` ingests; relative to where the app runs
UPLOADS = "uploads"  # subfolder of KB_DIR that uploads go to
ALLOWED_SUFFIXES = (".md", ".mdx", ".txt", ".html", ".pdf", ".csv", ".json", ".jsonl", ".docx")
MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(RagtuneError):
    """An uploaded file was refused; the message says why."""


def clean_name(name: str) -> str:
    """The name the file is stored under, or UploadError for a name that is not a plain file name."""
    if not name or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        raise UploadError(f"{name!r} is not a plain file name: upload the file itself, not a path.")
    if name.startswith("."):
        raise UploadError(f"{name!r} is a hidden file name: rename it without the leading dot.")
    path = Path(name)
    suffix = path.suffix.lower()
    if suffix not in ALLOWED_SUFFIXES:
        allowed = ", ".join(s.lstrip(".") for s in ALLOWED_SUFFIXES)
        raise UploadError(f"{name!r} has type {suffix or '(none)'!r}, which is not accepted: upload {allowed}.")
    stem = _UNSAFE.sub("-", path.stem).strip("-.") or "upload"
    return stem + suffix


def save_upload(name: str, data: bytes, kb_dir: Path) -> Path:
    """Write one upload to `kb_dir/uploads/` under a clean name; returns where it went."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name!r} is {len(data) / 1e6:.1f} MB, over the {MAX_UPLOAD_MB} MB limit: split it.")
    folder = (kb_dir / UPLOADS).resolve()
    target = folder / clean_name(name)
    if target.resolve().parent != folder:  # belt and braces: clean_name already allows no separators
        raise UploadError(f"{name!r} would be written outside {folder}.")
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")  # hidden, so an ingest running now skips it
    partial.write_bytes(data)
    partial.replace(target)
    return target
