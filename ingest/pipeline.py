"""load -> split -> embed -> upsert, incrementally: only added or changed files are embedded.

Each file's content hash is kept in the collection's manifest, which is written
only after all of that file's chunks are stored. A run killed at any point leaves
files either complete and listed, or unlisted; unlisted files are deleted and
rewritten by the next run, and point ids are deterministic (source, chunk index,
content hash), so any number of re-runs ends with exactly one copy of each chunk.
The embedding model is loaded only when something needs embedding, so an
unchanged re-ingest costs a hash of each file and one read of the manifest.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot import sparse
from chatbot.config import Settings
from chatbot.errors import LoadError
from chatbot.models import embed_model_name, embed_token_counter, load_embeddings
from chatbot.store import ChunkPoint, Store
from ingest.loaders import SUPPORTED_SUFFIXES
from ingest.split import ChunkerSettings, TokenCounter, embed_text
from ingest.worker import FileReader, ReadLimits

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

MAX_FILE_BYTES = 50 * 1024 * 1024
BATCH_SIZE = 64
SPARSE_VERSION = "tf-idf-1"
_POINT_NAMESPACE = uuid.UUID("6f1c3b52-9d1e-4a55-9f7a-2b0c5e8d7a10")

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest, and the folder its `source` name is relative to."""

    path: Path
    source: str
    root: str


@dataclass
class IngestReport:
    """What a run did (or, with `dry_run`, would do); `to_json()` is the `rag-ingest --json` object."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    chunks: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        """Counts, failures and timing as DESIGN.md specifies, plus the skipped files."""
        counts = {name: len(getattr(self, name)) for name in ("added", "changed", "removed", "unchanged")}
        return {
            **counts,
            "chunks": self.chunks,
            "failed": self.failed,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
        }


def discover_files(paths: Sequence[Path]) -> tuple[list[SourceFile], list[dict[str, str]], set[str]]:
    """Files to ingest, files skipped (hidden, unknown type, symlink) with why, and the folders whose removals count."""
    files, skipped, scopes = [], [], set()
    for given in paths:
        if given.is_file():
            files.append(SourceFile(given, given.name, str(given.resolve().parent)))
            continue
        root = given.resolve()
        scopes.add(str(root))
        for path in sorted(root.rglob("*")):  # rglob does not descend into linked folders
            relative = path.relative_to(root)
            source = relative.as_posix()
            hidden = any(part.startswith(".") for part in relative.parts)
            if path.is_symlink() and not hidden:
                skipped.append({"path": source, "reason": _link_reason(path, root)})
                continue
            if not path.is_file():
                continue
            if hidden:
                skipped.append({"path": source, "reason": "hidden"})
            elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
                skipped.append({"path": source, "reason": f"unsupported type {path.suffix or '(none)'}"})
            else:
                files.append(SourceFile(path, source, str(root)))
    return files, skipped, scopes


def _link_reason(link: Path, root: Path) -> str:
    # Links are never followed: one leading out of the folder could read anything the user can (a key
    # file, say) into a searchable collection, and one inside it reaches a file that is read under its own name.
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a loop, before Python 3.13
        return "symlink that is broken or loops: not followed"
    kind = "folder" if target.is_dir() else "file"
    if not target.is_relative_to(root):
        return f"symlink to a {kind} outside {root.name}/: not followed"
    return f"symlink to the {kind} {target.relative_to(root).as_posix()}: not followed, so nothing is read twice"


def fingerprint(embed_model: str, dim: int | None, chunker: ChunkerSettings) -> dict[str, Any]:
    """What a collection's chunks were made with; `dim` is filled in once the model is loaded."""
    return {"embed_model": embed_model, "dim": dim, "chunker": chunker.fingerprint(), "sparse": SPARSE_VERSION}


def run_ingest(
    paths: Sequence[Path],
    *,
    store: Store,
    load_embeddings: Callable[[], Embeddings],
    embed_model: str,
    count_tokens: TokenCounter,
    chunker: ChunkerSettings | None = None,
    dry_run: bool = False,
    recreate: bool = False,
    max_file_bytes: int = MAX_FILE_BYTES,
    read_limits: ReadLimits | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Bring the collection in line with the files under `paths`; bad files are reported, never fatal."""
    started = time.perf_counter()
    chunker = chunker or ChunkerSettings()
    progress = progress or (lambda phase, done, total: None)
    files, skipped, scopes = discover_files(paths)
    report = IngestReport(skipped=skipped, dry_run=dry_run)

    expected = fingerprint(embed_model, None, chunker)
    stored_fingerprint = None if recreate else store.fingerprint()
    if stored_fingerprint is not None:
        store.check_fingerprint({**expected, "dim": stored_fingerprint.get("dim")})
    elif store.exists() and not recreate:
        store.check_fingerprint(expected)  # a collection rag-ingest did not make: refuse it
    manifest = {} if recreate else store.manifest()

    hashes: dict[str, str] = {}
    to_write: list[SourceFile] = []
    for done, item in enumerate(files, 1):
        progress("hash", done, len(files))
        try:
            hashes[item.source] = _file_hash(item.path, max_file_bytes)
        except LoadError as error:
            report.failed.append({"path": item.source, "error": str(error)})
            continue
        if manifest.get(item.source, {}).get("hash") == hashes[item.source]:
            report.unchanged.append(item.source)
        else:
            to_write.append(item)

    present = {item.source for item in files}
    report.removed = sorted(s for s, entry in manifest.items() if entry.get("root") in scopes and s not in present)
    if not recreate:
        # Chunks no manifest entry accounts for: left by a run that was killed before listing them.
        pending = {item.source for item in to_write}
        report.removed = sorted({*report.removed, *(set(store.stored_sources()) - set(manifest) - pending)})
    # Each file is loaded and split in a child process with a time and memory budget: a file that overruns,
    # recurses or crashes its parser is listed as failed, and the others still land (dry run included).
    chunks: list[Document] = []
    with FileReader(count_tokens, chunker, read_limits) as reader:
        for done, item in enumerate(to_write, 1):
            progress("load", done, len(to_write))
            try:
                chunks.extend(reader.read(item.path, item.source))
            except LoadError as error:
                report.failed.append({"path": item.source, "error": str(error)})
                continue
            (report.changed if item.source in manifest else report.added).append(item.source)
    report.chunks = len(chunks)

    if not dry_run:
        if recreate and store.exists():
            store.drop()
        writing = {item.source: item for item in to_write if item.source in {*report.added, *report.changed}}
        if writing or report.removed:
            _write(store, manifest, writing, hashes, report.removed, chunks, load_embeddings, expected, progress)
    report.seconds = time.perf_counter() - started
    return report


def ingest_paths(
    paths: Sequence[Path], settings: Settings, *, store: Store, embeddings: Embeddings | None = None, **options: Any
) -> IngestReport:
    """`run_ingest` wired as `rag-ingest` wires it: the settings' embedding model, its tokenizer and its window."""
    count_tokens, window = embed_token_counter(settings)
    return run_ingest(
        paths,
        store=store,
        load_embeddings=(lambda: embeddings) if embeddings is not None else (lambda: load_embeddings(settings)),
        embed_model=embed_model_name(settings),
        count_tokens=count_tokens,
        chunker=ChunkerSettings(chunk_tokens=window - 2),  # the window counts [CLS] and [SEP]
        **options,
    )


def _write(
    store: Store,
    manifest: dict[str, dict[str, Any]],
    writing: dict[str, SourceFile],
    hashes: dict[str, str],
    removed: list[str],
    chunks: list[Document],
    load_embeddings: Callable[[], Embeddings],
    expected: dict[str, Any],
    progress: Progress,
) -> None:
    embeddings = load_embeddings() if chunks else None
    if embeddings is not None and not store.exists():
        store.create({**expected, "dim": len(embeddings.embed_query("dimension probe"))})
    if not store.exists():
        return
    # Unlist before deleting: a file is listed only while all of its chunks are stored.
    for source in [*removed, *writing]:
        manifest.pop(source, None)
    store.save_manifest(manifest)
    store.delete_sources({*removed, *writing})

    totals = Counter(chunk.metadata["source"] for chunk in chunks)
    remaining = totals.copy()
    # Batches of similar length pad least (sentence-transformers does the same within a call);
    # a file is listed once its last chunk is stored, whatever order they go in.
    chunks = sorted(chunks, key=lambda chunk: len(embed_text(chunk)))
    # Writes run on one background thread while the next batch embeds (torch frees the GIL);
    # waiting for each write before queueing the next keeps them in order.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for start in range(0, len(chunks), BATCH_SIZE):
            batch = chunks[start : start + BATCH_SIZE]
            texts = [embed_text(chunk) for chunk in batch]
            vectors = embeddings.embed_documents(texts)
            points = [
                _point(chunk, text, vector, hashes) for chunk, text, vector in zip(batch, texts, vectors, strict=True)
            ]
            remaining.subtract(chunk.metadata["source"] for chunk in batch)
            for source in {chunk.metadata["source"] for chunk in batch if remaining[chunk.metadata["source"]] == 0}:
                manifest[source] = {"hash": hashes[source], "root": writing[source].root, "chunks": totals[source]}
            if pending is not None:
                pending.result()
            pending = writer.submit(_store_batch, store, points, dict(manifest))
            progress("embed", start + len(batch), len(chunks))
        if pending is not None:
            pending.result()


def _store_batch(store: Store, points: list[ChunkPoint], manifest: dict[str, dict[str, Any]]) -> None:
    # Points first, then the manifest that lists the files they complete.
    store.upsert(points)
    store.save_manifest(manifest)


def _point(chunk: Document, text: str, vector: list[float], hashes: dict[str, str]) -> ChunkPoint:
    meta = chunk.metadata
    key = f"{meta['source']}\x00{meta['chunk_index']}\x00{meta['content_hash']}"
    payload = {**meta, "text": chunk.page_content, "source_hash": hashes[meta["source"]]}
    return ChunkPoint(str(uuid.uuid5(_POINT_NAMESPACE, key)), vector, sparse.document_vector(text), payload)


def _file_hash(path: Path, max_file_bytes: int) -> str:
    try:
        size = path.stat().st_size
        if size > max_file_bytes:
            raise LoadError(
                f"file is {size / 1e6:.1f} MB, over the {max_file_bytes / 1e6:.0f} MB limit: split it, "
                "or raise the limit with --max-file-mb"
            )
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise LoadError(f"cannot read the file: {error.strerror or error}") from error


__all__ = ["IngestReport", "SourceFile", "discover_files", "ingest_paths", "run_ingest"]
