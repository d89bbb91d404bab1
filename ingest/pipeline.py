"""load -> split -> embed -> upsert, incrementally: only added or changed files are embedded.

A file is known by its path (`chatbot.rag.store.file_key`: the folder it was ingested
from, joined with its `source`), so `a/guide.md` and `b/guide.md` are two files,
while hits still name it by `source`, relative to the folder given. The manifest
maps each file to its content hash, `source`, root, chunk count, and whether the
root was given as a folder (`folder`; a single file records its parent as root).
A file reached through two folders, one inside the other, is still one file,
named as the last run that wrote it named it (its `source` changed: rewritten).

Files are embedded and stored in file order, a window of a few files at a time
(sorted by length inside the window, so batches pad little), and each file is
listed in the manifest as soon as its window is stored. A changed file is
swapped, never emptied: it stays listed, marked `stale`, with its old chunks
searchable while the new ones are embedded and stored; then the chunks its old
version left are deleted and it is listed anew. A run killed at any point thus
leaves every file complete and listed, listed as stale (old chunks complete, some
new ones beside them), or unlisted; the next run rewrites stale and unlisted
files and deletes each one's chunks it did not write, and point ids are
deterministic (file, chunk index, content hash), so any number of re-runs ends
with exactly one copy of each chunk, and a re-run after a kill embeds only the
files it had not finished.

A file leaves the collection (reported under `removed`) when a folder it was
ingested from is given again and the file is gone from it or no longer
qualifies (hidden, unsupported), or, at any run, when its path no longer exists:
so `mv a a2; rag-ingest a2` leaves no chunks of `a` behind. The check is on this
machine's disk: a collection on a server ingested from several machines, or from
a drive that is not mounted, loses (until re-ingested) the files this one cannot
see. A dry run reports all of this and changes nothing.

The embedding model is loaded only when something needs embedding, so an
unchanged re-ingest costs a hash of each file, a look at each listed path, and
two reads of the store (manifest, and which files have chunks).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.core.config import Settings
from chatbot.core.errors import LoadError
from chatbot.llm.loading import embed_model_name, embed_token_counter, load_embeddings
from chatbot.rag import abstain, sparse
from chatbot.rag.store import FILE, ChunkPoint, Store, file_key
from ingest.loaders import SUPPORTED_SUFFIXES
from ingest.split import ChunkerSettings, TokenCounter, embed_text
from ingest.worker import FileReader, ReadLimits

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

MAX_FILE_BYTES = 50 * 1024 * 1024
BATCH_SIZE = 64
WINDOW_BATCHES = 4  # files are embedded in groups of about this many batches, sorted by length within a group
HEADINGS_PER_FILE = 20  # heading paths a file lends the abstention calibration (chatbot.rag.abstain)
SPARSE_VERSION = f"tf-idf-{sparse.SCHEME}"  # in the fingerprint: other keyword vectors need a rebuild
_POINT_NAMESPACE = uuid.UUID("6f1c3b52-9d1e-4a55-9f7a-2b0c5e8d7a10")

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest, and the folder its `source` name is relative to."""

    path: Path
    source: str
    root: str

    @property
    def key(self) -> str:
        """The file's identity in the manifest and on its points."""
        return file_key(self.root, self.source)


@dataclass(frozen=True)
class FileChunks:
    """A file being written: its manifest entry (hash, source, root...) and its chunks."""

    key: str
    entry: dict[str, Any]
    chunks: list[Document]


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
            # The folder resolved, not the file: a link given by name keeps its own name as its identity.
            files.append(SourceFile(given, given.name, str(given.parent.resolve())))
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
    if not (dry_run or recreate):
        store.upgrade()  # a collection of the old format: give its points their file key before anything else
    manifest = {} if recreate else store.manifest()

    hashes: dict[str, str] = {}
    to_write: list[SourceFile] = []
    refreshed: dict[str, dict[str, Any]] = {}
    for done, item in enumerate(files, 1):
        progress("hash", done, len(files))
        if item.key in hashes:
            continue  # given twice (a folder and a file in it)
        try:
            hashes[item.key] = _file_hash(item.path, max_file_bytes)
        except LoadError as error:
            report.failed.append({"path": item.source, "error": str(error)})
            continue
        entry = manifest.get(item.key, {})
        if _current(entry, item, hashes[item.key]):
            report.unchanged.append(item.source)
            if item.root in scopes and not entry.get("folder"):
                refreshed[item.key] = {**entry, "folder": True}  # its folder is now known to be one
        else:
            to_write.append(item)

    present = {item.key for item in files}
    removed = {
        key
        for key, entry in manifest.items()
        if (entry.get("root") in scopes and key not in present) or not Path(key).is_file()
    }
    # Each file is loaded and split in a child process with a time and memory budget: a file that overruns,
    # recurses or crashes its parser is listed as failed, and the others still land (dry run included).
    writing: list[FileChunks] = []
    with FileReader(count_tokens, chunker, read_limits) as reader:
        for done, item in enumerate(to_write, 1):
            progress("load", done, len(to_write))
            try:
                chunks = reader.read(item.path, item.source)
            except LoadError as error:
                report.failed.append({"path": item.source, "error": str(error)})
                continue
            (report.changed if item.key in manifest else report.added).append(item.source)
            writing.append(_file_chunks(item, manifest.get(item.key, {}), hashes[item.key], scopes, chunks))
    report.chunks = sum(len(file.chunks) for file in writing)

    stored = {} if recreate else store.stored_files()
    # Chunks no manifest entry accounts for, and no file of this run will replace: left by a killed run.
    removed |= set(stored) - set(manifest) - {file.key for file in writing}
    report.removed = sorted(_shown(key, scopes) for key in removed)
    if not dry_run:
        if recreate and store.exists():
            store.drop()
        embeddings = None
        if writing or removed or refreshed:
            changes = Changes(writing, removed, refreshed, set(stored))
            embeddings = _write(store, manifest, changes, load_embeddings, expected, progress)
        # After any change, and once for a collection that has no cut yet (made before, or a killed run).
        if writing or removed or (store.count() and abstain.stored_threshold(store) is None):
            _recalibrate(store, embeddings, load_embeddings)
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


@dataclass(frozen=True)
class Changes:
    """What a run writes: files to (re)write, files to remove, entries to update, files with chunks stored."""

    writing: list[FileChunks]
    removed: set[str]
    refreshed: dict[str, dict[str, Any]]
    stored: set[str]


def _current(entry: dict[str, Any], item: SourceFile, file_hash: str) -> bool:
    """Whether the listed chunks are this version's, named as this run names the file (and not mid-swap)."""
    return entry.get("hash") == file_hash and entry.get("source") == item.source and not entry.get("stale")


def _file_chunks(
    item: SourceFile,
    old: dict[str, Any],
    file_hash: str,
    scopes: set[str],
    chunks: list[Document],
) -> FileChunks:
    # A root once ingested as a folder stays one when a single file of it is ingested.
    folder = item.root in scopes or (old.get("root") == item.root and bool(old.get("folder")))
    entry = {"source": item.source, "root": item.root, "folder": folder, "hash": file_hash, "chunks": len(chunks)}
    headings = list(dict.fromkeys((c.metadata.get("title", ""), c.metadata.get("section", "")) for c in chunks))
    entry["headings"] = [list(pair) for pair in headings[:HEADINGS_PER_FILE]]
    return FileChunks(item.key, entry, chunks)


def _shown(key: str, scopes: set[str]) -> str:
    """How a removed file is named: relative to a folder given to this run, else by its whole path."""
    inside = (Path(key).relative_to(root).as_posix() for root in scopes if Path(key).is_relative_to(root))
    return min(inside, key=len, default=key)


def _write(
    store: Store,
    manifest: dict[str, dict[str, Any]],
    changes: Changes,
    load_embeddings: Callable[[], Embeddings],
    expected: dict[str, Any],
    progress: Progress,
) -> Embeddings | None:
    """Store the changes; returns the embedder if it had to be loaded."""
    total = sum(len(file.chunks) for file in changes.writing)
    embeddings = load_embeddings() if total else None
    if embeddings is not None and not store.exists():
        store.create({**expected, "dim": len(embeddings.embed_query("dimension probe"))})
    if not store.exists():
        return embeddings
    # Unlist before deleting: a file is listed only while all of its chunks are stored. A file about to
    # be replaced stays listed, and searchable, until its new chunks are stored; marking it stale makes
    # the next run finish a swap this one was killed in, even if the file has been put back as it was.
    for key in changes.removed:
        manifest.pop(key, None)
    manifest.update(changes.refreshed)
    for file in changes.writing:
        if file.key in manifest:
            manifest[file.key] = {**manifest[file.key], "stale": True}
    store.save_manifest(manifest)
    store.delete_files(changes.removed)

    done = 0
    # Writes run on one background thread while the next batch embeds (torch frees the GIL);
    # waiting for each write before queueing the next keeps them in order.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for window in _windows(changes.writing):
            # Batches of similar length pad least (sentence-transformers does the same within a call).
            chunks = sorted(((f, c, embed_text(c)) for f in window for c in f.chunks), key=lambda item: len(item[2]))
            batches = [chunks[start : start + BATCH_SIZE] for start in range(0, len(chunks), BATCH_SIZE)] or [[]]
            for number, batch in enumerate(batches, 1):
                texts = [text for _, _, text in batch]
                vectors = embeddings.embed_documents(texts) if texts else []
                points = [_point(f, c, t, v) for (f, c, t), v in zip(batch, vectors, strict=True)]
                finished = window if number == len(batches) else []
                for file in finished:
                    manifest[file.key] = file.entry
                swaps = [(f.key, {_point_id(f.key, c) for c in f.chunks}) for f in finished if f.key in changes.stored]
                if pending is not None:
                    pending.result()
                pending = writer.submit(_store_batch, store, points, swaps, dict(manifest) if finished else None)
                done += len(batch)
                progress("embed", done, total)
        if pending is not None:
            pending.result()
    store.optimize()  # Edge builds its HNSW index when asked, once the bulk of the writing is done
    return embeddings


def _recalibrate(store: Store, embeddings: Embeddings | None, load: Callable[[], Embeddings]) -> None:
    """Set the collection's abstention cut from its headings, after anything in it changed."""
    if not store.exists():
        return
    if store.count() and embeddings is None:
        embeddings = load()  # only files were removed: the model was not needed until now
    headings = [tuple(pair) for entry in store.manifest().values() for pair in entry.get("headings", ())]
    abstain.recalibrate(store, embeddings, headings)


def _windows(files: list[FileChunks]) -> Iterator[list[FileChunks]]:
    """Consecutive files, grouped until a group fills `WINDOW_BATCHES` batches (a bigger file is a group alone)."""
    window, size = [], 0
    for file in files:
        window.append(file)
        size += len(file.chunks)
        if size >= WINDOW_BATCHES * BATCH_SIZE:
            yield window
            window, size = [], 0
    if window:
        yield window


def _store_batch(
    store: Store, points: list[ChunkPoint], swaps: list[tuple[str, set[str]]], manifest: dict[str, Any] | None
) -> None:
    # Points first, then what the files' old versions left, then the manifest that lists the files anew.
    store.upsert(points)
    for key, ids in swaps:
        store.delete_stale(key, ids)
    if manifest is not None:
        store.save_manifest(manifest)


def _point(file: FileChunks, chunk: Document, text: str, vector: list[float]) -> ChunkPoint:
    payload = {**chunk.metadata, "text": chunk.page_content, "source_hash": file.entry["hash"], FILE: file.key}
    return ChunkPoint(_point_id(file.key, chunk), vector, sparse.document_vector(text), payload)


def _point_id(key: str, chunk: Document) -> str:
    return str(
        uuid.uuid5(_POINT_NAMESPACE, f"{key}\x00{chunk.metadata['chunk_index']}\x00{chunk.metadata['content_hash']}")
    )


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
