"""The Qdrant Edge engine behind `Store`: one in-process shard per collection, with HNSW and real sparse indexes.

Edge has no collection metadata, so the records a collection carries (fingerprint, manifest,
format, when it changed) live in a small JSON file beside its shard. The file is written
whole through a rename, and only after the shard is flushed, so it never lists points the
shard could lose: an ingest killed half-way finds the manifest it left before its last batch.

Layout under `RAG_QDRANT_PATH` (local mode keeps `collection/` and `meta.json` there, so the
two cannot be confused, and a local-mode collection is migrated once into `edge/`):

    edge/<collection>.lock        held (flock) by the one process that has the collection open
    edge/<collection>/shard/      the Edge shard (segments, WAL)
    edge/<collection>/ragtune.json  the collection's records; the collection exists once it is written
    edge/<collection>.migrated    the local-mode collection was copied here: never copy it again
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from chatbot.core.errors import StoreError, StoreLockedError
from chatbot.core.files import atomic_folder, atomic_write_text
from chatbot.rag._client import open_local_client
from chatbot.rag._points import DENSE, FILE, SPARSE, ChunkPoint, Match, Selector

RECORDS = "ragtune.json"
MIGRATE_BATCH = 1_000
_KEYWORD_KEYS = ("source", "section", FILE)


def edge_folder(root: Path, collection: str) -> Path:
    """Where a collection's Edge data lives under `RAG_QDRANT_PATH`."""
    return Path(root) / "edge" / collection


class EdgeCollection:
    """One collection in one Edge shard, held by this process alone until `close`."""

    def __init__(self, root: Path, collection: str) -> None:
        self.root = Path(root)
        self.collection = collection
        self.folder = edge_folder(root, collection)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        lock = _take_lock(self.folder.with_name(f"{collection}.lock"), self.folder.parent, collection)
        self._unlock = weakref.finalize(self, os.close, lock)  # closing the descriptor lets the flock go
        _remove_staging_leftovers(self.folder)  # a migration or drop killed half-way (we hold the lock)
        self._records: dict[str, Any] | None = self._read_records()
        self._shard: qe.EdgeShard | None = None
        # The app's sessions share one store from several threads: the shard itself is safe to share, but
        # opening it twice would trip over its own WAL lock, and two record writes must not interleave.
        self._guard = threading.RLock()
        if self._records is None and _local_collection(self.root, collection).is_dir():
            try:
                self._migrate()
            except BaseException:
                self._unlock()  # no store to close: let the next open (or process) try again at once
                raise

    # -- the collection's records ------------------------------------------------------------------------

    def _read_records(self) -> dict[str, Any] | None:
        path = self.folder / RECORDS
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def exists(self) -> bool:
        return self._records is not None

    def metadata(self) -> dict[str, Any]:
        return dict(self._records or {})

    def update_metadata(self, values: dict[str, Any]) -> None:
        with self._guard:
            # Points before the records that list them: a crash after the flush loses at most this update.
            self._open_shard().flush()
            records = {**(self._records or {}), **values}
            atomic_write_text(self.folder / RECORDS, json.dumps(records, sort_keys=True))
            self._records = records

    # -- lifecycle ---------------------------------------------------------------------------------------

    def create(self, dim: int, metadata: dict[str, Any]) -> None:
        shard_path = self.folder / "shard"
        shutil.rmtree(shard_path, ignore_errors=True)  # a create killed before its records were written
        self.folder.mkdir(parents=True, exist_ok=True)
        self._shard = _create_shard(shard_path, dim)
        self.update_metadata(metadata)

    def drop(self) -> None:
        self._close_shard()
        if self.folder.exists():
            # Renamed first, so a drop killed half-way leaves a hidden leftover, never half a collection.
            doomed = self.folder.with_name(f".{self.collection}-dropped.tmp")
            shutil.rmtree(doomed, ignore_errors=True)
            os.replace(self.folder, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        self._records = None
        if _local_collection(self.root, self.collection).is_dir():
            self._marker().touch()  # a dropped collection must not come back from the old local folder

    def close(self) -> None:
        self._close_shard()
        self._unlock()  # once only, however often it is called

    def _close_shard(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None

    def _open_shard(self) -> qe.EdgeShard:
        with self._guard:
            return self._shard or self._load_shard()

    def _load_shard(self) -> qe.EdgeShard:
        try:
            self._shard = qe.EdgeShard.load(str(self.folder / "shard"))
        except Exception as error:  # qdrant_edge raises plain Exception
            raise StoreError(
                f"cannot open the Qdrant Edge collection at {self.folder} ({error}): rebuild it with "
                "`rag-ingest --recreate`."
            ) from error
        return self._shard

    # -- points ------------------------------------------------------------------------------------------

    def create_index(self, key: str) -> None:
        self._open_shard().update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))

    def upsert(self, points: Sequence[ChunkPoint]) -> None:
        edge_points = [
            qe.Point(
                p.id,
                {DENSE: [float(v) for v in p.dense], SPARSE: qe.SparseVector(list(p.sparse[0]), list(p.sparse[1]))},
                p.payload,
            )
            for p in points
        ]
        if edge_points:
            self._open_shard().update(qe.UpdateOperation.upsert_points(edge_points))

    def delete(self, selector: Selector) -> None:
        self._open_shard().update(qe.UpdateOperation.delete_points_by_filter(_filter(selector)))

    def set_payload(self, selector: Selector, payload: dict[str, Any]) -> None:
        self._open_shard().update(qe.UpdateOperation.set_payload_by_filter(_filter(selector), payload))

    def facet(self, key: str) -> dict[str, int]:
        if not self.exists():
            return {}
        hits = self._open_shard().facet(qe.FacetRequest(key, limit=1_000_000, exact=True)).hits
        # Edge's keyword index keeps a value whose points were all deleted, with a count of 0.
        return {str(hit.value): hit.count for hit in hits if hit.count}

    def count(self) -> int:
        return self._open_shard().count(qe.CountRequest(exact=True)) if self.exists() else 0

    def optimize(self) -> None:
        # Edge runs no optimizer in the background: build HNSW and merge segments now, after a bulk write.
        if self.exists():
            self._open_shard().optimize()
            self._shard.flush()

    def records(self) -> Iterator[ChunkPoint]:
        if not self.exists():
            return
        offset = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=MIGRATE_BATCH, with_payload=True, with_vector=True)
            batch, offset = self._open_shard().scroll(request)
            for record in batch:
                yield _chunk_point(record.id, record.vector, record.payload)
            if offset is None:
                return

    # -- search ------------------------------------------------------------------------------------------

    def search_dense(self, vector: Sequence[float], *, limit: int, where: Selector | None) -> list[Match]:
        return self._query(qe.Query.Nearest(list(vector), using=DENSE), limit=limit, where=where)

    def search_sparse(
        self, sparse: tuple[list[int], list[float]], *, limit: int, where: Selector | None
    ) -> list[Match]:
        keywords = qe.SparseVector(list(sparse[0]), list(sparse[1]))
        return self._query(qe.Query.Nearest(keywords, using=SPARSE), limit=limit, where=where)

    def _query(self, query: Any, *, limit: int, where: Selector | None, prefetches: list | None = None) -> list[Match]:
        if not self.exists():
            return []
        request = qe.QueryRequest(
            limit=limit,
            query=query,
            prefetches=prefetches,
            filter=_filter(where),
            with_payload=True,
            with_vector=[DENSE],
        )
        return [
            Match(str(p.id), p.score, p.payload or {}, list(p.vector[DENSE])) for p in self._open_shard().query(request)
        ]

    # -- migration from local mode -----------------------------------------------------------------------

    def _marker(self) -> Path:
        return self.folder.with_name(f"{self.collection}.migrated")

    def _migrate(self) -> None:
        """Copy the local-mode collection of the same name into Edge, once; the local folder is left as it was."""
        if self._marker().exists():
            return
        shutil.rmtree(self.folder, ignore_errors=True)  # a create killed before its records (we hold the lock)
        client = open_local_client(self.root)
        try:
            if not client.collection_exists(self.collection):
                return
            info = client.get_collection(self.collection)
            dense = info.config.params.vectors
            dense = dense.get(DENSE) if isinstance(dense, dict) else None
            if dense is None or SPARSE not in (info.config.params.sparse_vectors or {}):
                raise StoreError(
                    f"The local-mode collection '{self.collection}' in {self.root} was not made by rag-ingest "
                    "(no dense and sparse vectors), so it cannot be moved to the Qdrant Edge engine: rebuild it "
                    "with `rag-ingest --recreate PATH...`, or keep local mode with RAG_QDRANT_ENGINE=local."
                )
            # Built whole in a hidden folder and renamed into place: a copy killed half-way leaves no
            # collection here, and the next open copies again from the untouched local folder.
            with atomic_folder(self.folder) as staging:
                shard = _create_shard(staging / "shard", dense.size)
                _copy_points(client, self.collection, shard)
                shard.optimize()
                shard.flush()
                shard.close()
                records = {**(info.config.metadata or {}), "ragtune_migrated_from": str(self.root)}
                atomic_write_text(staging / RECORDS, json.dumps(records, sort_keys=True))
            self._marker().touch()
            self._records = self._read_records()
        finally:
            client.close()


def _copy_points(client: Any, collection: str, shard: qe.EdgeShard) -> None:
    offset = None
    while True:
        records, offset = client.scroll(
            collection, limit=MIGRATE_BATCH, offset=offset, with_payload=True, with_vectors=True
        )
        points = []
        for record in records:
            vectors = record.vector or {}
            keywords = vectors.get(SPARSE)
            sparse = qe.SparseVector(list(keywords.indices), list(keywords.values)) if keywords else None
            named = {DENSE: list(vectors[DENSE])} | ({SPARSE: sparse} if sparse is not None else {})
            points.append(qe.Point(str(record.id), named, record.payload or {}))
        if points:
            shard.update(qe.UpdateOperation.upsert_points(points))
        if offset is None:
            return


def _create_shard(path: Path, dim: int) -> qe.EdgeShard:
    config = qe.EdgeConfig(
        vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
    )
    shard = qe.EdgeShard.create(str(path), config)
    for key in _KEYWORD_KEYS:  # filters and facets on these keys
        shard.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))
    return shard


def _take_lock(path: Path, folder: Path, collection: str) -> int:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # flock, not a lock file's existence: the kernel lets go when the holder exits, even killed.
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise StoreLockedError(
            f"The Qdrant Edge collection '{collection}' in {folder} is in use by another process (probably the "
            "running app): one process at a time may open it. Stop the app and run again, re-ingest from the "
            "app's Knowledge base page, or use a Qdrant server (RAG_QDRANT_URL) for several processes."
        ) from None
    return descriptor


def _remove_staging_leftovers(folder: Path) -> None:
    for leftover in folder.parent.glob(f".{folder.name}-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def _local_collection(root: Path, collection: str) -> Path:
    # Where qdrant-client's local mode keeps a collection under the same folder.
    return root / "collection" / collection


def _filter(selector: Selector | None) -> qe.Filter | None:
    if selector is None:
        return None
    must: list[Any] = [qe.FieldCondition(key, match=qe.MatchAny(list(values))) for key, values in selector.match]
    if selector.missing is not None:
        must.append(qe.IsEmptyCondition(selector.missing))
    must_not = [qe.HasIdCondition(set(selector.keep_ids))] if selector.keep_ids else None
    return qe.Filter(must=must, must_not=must_not) if must or must_not else None


def _chunk_point(point_id: Any, vector: Any, payload: dict[str, Any] | None) -> ChunkPoint:
    vectors = vector or {}
    keywords = vectors.get(SPARSE)
    sparse = (list(keywords.indices), list(keywords.values)) if keywords is not None else ([], [])
    return ChunkPoint(str(point_id), list(vectors.get(DENSE, [])), sparse, payload or {})


__all__ = ["EdgeCollection", "edge_folder"]
