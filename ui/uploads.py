"""Files uploaded on the Knowledge base page: checked on the server, then written inside the knowledge base only.

The browser's own type and size checks are a convenience, not a guarantee: a crafted
request can send any name and any size. So every rule is enforced here: a plain file
name (no folders, no hidden files), an allowed type, at most `MAX_UPLOAD_BYTES`, and a
target that resolves inside the uploads folder.

Stored names keep letters of every script (`日本語.md` and `中文.md` stay two files), and
are cut to `MAX_NAME_BYTES` keeping the type (a file system takes 255 bytes a name).
Uploading a name that is already there replaces that file, which is how a document is
updated; `SavedUpload.replaced` says so, so the page can tell the user.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from chatbot.core.errors import RagtuneError

KB_DIR = Path("data/kb")  # the folder `rag-ingest data/kb` ingests; relative to where the app runs
UPLOADS = "uploads"  # subfolder of KB_DIR that uploads go to
ALLOWED_SUFFIXES = (".md", ".mdx", ".txt", ".html", ".pdf", ".csv", ".json", ".jsonl", ".docx")
MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
MAX_NAME_BYTES = 200  # UTF-8 bytes of a stored name, type included; well under the usual 255
_KEPT_PUNCTUATION = "._-"


class UploadError(RagtuneError):
    """An uploaded file was refused; the message says why."""


def clean_name(name: str) -> str:
    """The name the file is stored under, or UploadError for a name that is not a plain file name."""
    if not name or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        raise UploadError(f"{name!r} is not a plain file name: upload the file itself, not a path.")
    if name.startswith("."):
        raise UploadError(f"{name!r} is a hidden file name: rename it without the leading dot.")
    path = Path(unicodedata.normalize("NFC", name))  # one spelling of "é", so a re-upload finds its file
    suffix = path.suffix.lower()
    if suffix not in ALLOWED_SUFFIXES:
        allowed = ", ".join(s.lstrip(".") for s in ALLOWED_SUFFIXES)
        raise UploadError(f"{name!r} has type {suffix or '(none)'!r}, which is not accepted: upload {allowed}.")
    stem = _plain_stem(path.stem) or "upload"
    return _shorten(stem, MAX_NAME_BYTES - len(suffix.encode())) + suffix


def _plain_stem(stem: str) -> str:
    """Letters, marks and digits of any script, and . _ -; each run of anything else (spaces,
    brackets, control and bidi-override characters) becomes one "-"."""
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" or c in _KEPT_PUNCTUATION else " " for c in stem)
    return "-".join(kept.split()).strip("-.")


def _shorten(stem: str, limit: int) -> str:
    """`stem` cut to at most `limit` UTF-8 bytes, on a character boundary."""
    return stem.encode()[:limit].decode(errors="ignore").rstrip("-.")


@dataclass(frozen=True)
class SavedUpload:
    """Where an upload went, and what the user should be told about it."""

    path: Path
    renamed: bool  # stored under another name than the one uploaded (made plain, or shortened)
    replaced: bool  # a file of that name was there and has been replaced


def save_upload(name: str, data: bytes, kb_dir: Path) -> SavedUpload:
    """Write one upload to `kb_dir/uploads/` under a clean name, replacing a file of that name."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name!r} is {len(data) / 1e6:.1f} MB, over the {MAX_UPLOAD_MB} MB limit: split it.")
    folder = (kb_dir / UPLOADS).resolve()
    target = folder / clean_name(name)
    if target.resolve().parent != folder:  # belt and braces: clean_name already allows no separators
        raise UploadError(f"{name!r} would be written outside {folder}.")
    folder.mkdir(parents=True, exist_ok=True)
    replaced = target.exists()
    # A temporary file of its own (two sessions may upload the same name at once) in the same
    # folder (so the rename is atomic), hidden (so an ingest running now skips it).
    handle, partial = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(partial, 0o644)  # mkstemp makes it private to this user; the knowledge base is not
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return SavedUpload(target, target.name != unicodedata.normalize("NFC", name), replaced)
