"""The one module that talks to Qdrant: local folder, in-memory, or server, same code path.

A collection holds one point per chunk, with a named dense vector and a named
sparse (keyword) vector. Its metadata carries two small records: the embedding
*fingerprint* (model, dimension, chunker settings) that every writer must match,
and the *manifest* (file -> source, root, content hash, chunk count) that makes
re-ingestion incremental. Keeping both inside the collection means they travel
with it to a server and can never disagree with a side file.

A file's identity is its path, the folder it was ingested from joined with its
`source` (see `file_key`): two folders may both hold a `guide.md`, so `source`
alone is not unique. Every point carries that identity in its `file` payload
key, and replacing or removing a file's chunks matches on it. Collections made
before files had an identity (manifest keyed by `source`, points without
`file`) read as if upgraded, and `upgrade` rewrites them once, on the next write.
"""

from __future__ import annotations

import atexit
import warnings
import weakref
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from chatbot.core.config import Settings, redact_url
from chatbot.core.errors import CollectionMissingError, FingerprintMismatchError, StoreError, StoreLockedError

DENSE = "dense"
SPARSE = "sparse"
MANIFEST_KEY = "ragtune_manifest"
FINGERPRINT_KEY = "ragtune_fingerprint"
UPDATED_KEY = "ragtune_updated"
FORMAT_KEY = "ragtune_format"
FORMAT = 2  # 1 (no key): manifest keyed by source; 2: keyed by file, points carry FILE
FILE = "file"
SERVER_TIMEOUT = 30  # seconds per request to a Qdrant server: room for a waited-for batch upsert on a busy one


def open_client(settings: Settings, *, location: str | None = None) -> QdrantClient:
    """A Qdrant client for the settings: server if `RAG_QDRANT_URL`, else the local folder (or `location`)."""
    if location is not None:
        return QdrantClient(location=location)
    if settings.qdrant_url:
        return _server_client(settings)
    try:
        return QdrantClient(path=str(settings.qdrant_path))
    except RuntimeError as error:
        if "already accessed" not in str(error):
            raise
        raise StoreLockedError(
            f"The local Qdrant store {settings.qdrant_path} is in use by another process (probably the "
            "running app): local mode allows one process per folder. Stop the app and run again, re-ingest "
            "from the app's Knowledge base page, or use a Qdrant server (RAG_QDRANT_URL)."
        ) from error


def _server_client(settings: Settings) -> QdrantClient:
    # One cheap authenticated call up front, so a server that is down or a wrong key fails here with
    # what to do, not later as a traceback in the middle of an ingest. (It stands in for qdrant-client's
    # own version check, which only warns when the server cannot be reached.)
    url = redact_url(settings.qdrant_url)  # what messages show: never the credentials a URL may carry
    client = QdrantClient(
        url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=SERVER_TIMEOUT, check_compatibility=False
    )
    try:
        client.get_collections()
    except (ResponseHandlingException, UnexpectedResponse) as error:
        client.close()
        if isinstance(error, ResponseHandlingException):
            reason = redact_url(str(error.source).strip()) or type(error.source).__name__
            fix = "start Qdrant (docker run -p 6333:6333 qdrant/qdrant) or unset it to use local mode."
            raise StoreError(f"cannot reach RAG_QDRANT_URL={url} ({reason}): {fix}") from error
        if error.status_code in (401, 403):
            raise StoreError(
                f"The Qdrant server at RAG_QDRANT_URL={url} refused the request ({error.status_code}): "
                "set RAG_QDRANT_API_KEY to its API key (or a read-write JWT)."
            ) from error
        raise StoreError(
            f"RAG_QDRANT_URL={url} answered {error.status_code} {error.reason_phrase}, not like a Qdrant "
            "server: check the URL (the REST port, usually 6333)."
        ) from error
    return client


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


# Stores not closed yet, closed at interpreter exit: a store a script leaves open (an engine in a global,
# say) is otherwise closed by QdrantClient.__del__ during shutdown, when the imports its close needs fail
# with an ImportError traceback.
_open_stores: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    for store in list(_open_stores):
        store.close()


class Store:
    """One collection in one Qdrant client; `shards` and `replicas` lay out a new collection on a cluster."""

    def __init__(
        self, client: QdrantClient, collection: str, *, shards: int | None = None, replicas: int | None = None
    ) -> None:
        self.client = client
        self.collection = collection
        self.shards = shards
        self.replicas = replicas
        _open_stores.add(self)

    @classmethod
    def open(cls, settings: Settings, collection: str | None = None) -> Store:
        """Open the configured store and collection (the collection may not exist yet)."""
        return cls(
            open_client(settings),
            collection or settings.collection,
            shards=settings.qdrant_shards,
            replicas=settings.qdrant_replicas,
        )

    def close(self) -> None:
        """Release the client (and the local folder's lock)."""
        _open_stores.discard(self)
        self.client.close()

    def exists(self) -> bool:
        """Whether the collection has been created."""
        return self.client.collection_exists(self.collection)

    def _metadata(self) -> dict[str, Any]:
        return self.client.get_collection(self.collection).config.metadata or {}

    def fingerprint(self) -> dict[str, Any] | None:
        """The fingerprint the collection was built with, or None if it has none."""
        return self._metadata().get(FINGERPRINT_KEY) if self.exists() else None

    def create(self, fingerprint: dict[str, Any]) -> None:
        """Create the collection for vectors of `fingerprint["dim"]` dimensions."""
        self.client.create_collection(
            self.collection,
            vectors_config={DENSE: models.VectorParams(size=fingerprint["dim"], distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={FINGERPRINT_KEY: fingerprint, MANIFEST_KEY: {}, FORMAT_KEY: FORMAT},
            # Payload (the chunk text) stays on disk on a server, so RAM holds vectors and indexes;
            # HNSW keeps the server's defaults (m=16, ef_construct=100). Local mode ignores all three.
            on_disk_payload=True,
            shard_number=self.shards,
            replication_factor=self.replicas,
        )
        with warnings.catch_warnings():
            # A server needs indexes for source/section filters and facets; local mode ignores them, and says so.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for key in ("source", "section", FILE):
                self.client.create_payload_index(self.collection, key, models.PayloadSchemaType.KEYWORD)

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        self.client.delete_collection(self.collection)

    def check_fingerprint(self, expected: dict[str, Any]) -> None:
        """Raise if the collection was built with a different embedding model or chunker."""
        found = self.fingerprint()
        if found == expected:
            return
        if found is not None and {**found, "sparse": expected.get("sparse")} == expected:
            raise FingerprintMismatchError(
                f"Collection '{self.collection}' holds keyword vectors of the scheme {found.get('sparse')!r}, but "
                f"this version of ragtune makes {expected.get('sparse')!r}: rebuild it with "
                "`rag-ingest --recreate` (or ingest into a new collection with --collection NAME)."
            )
        built = "no ragtune fingerprint (not made by rag-ingest)" if found is None else describe_fingerprint(found)
        raise FingerprintMismatchError(
            f"Collection '{self.collection}' was built with {built}, but the current settings give "
            f"{describe_fingerprint(expected)}. Ingest into a new collection (--collection NAME or "
            "RAG_COLLECTION), or rebuild this one with `rag-ingest --recreate`."
        )

    def check_embedding(self, embed_model: str) -> None:
        """Raise if the stored chunks were embedded by another model than the one that will embed the questions.

        A model of the same dimension would search without an error, comparing vectors of two different
        spaces. The chunker does not matter here (it changes what is stored, not how to search it), and a
        collection with nothing in it has nothing to mismatch, so the app can still open to ingest.
        """
        found = self.fingerprint()
        if found is None or found.get("embed_model") == embed_model or self.count() == 0:
            return
        raise FingerprintMismatchError(
            f"Collection '{self.collection}' was built with {describe_fingerprint(found)}, but the current "
            f"settings embed questions with {embed_model}: its vectors cannot be compared with the stored ones. "
            "Embed with the model it was built with (RAG_EMBED_MODEL; unset for the bundled all-MiniLM-L6-v2), "
            "use another collection (RAG_COLLECTION), or rebuild this one with `rag-ingest --recreate`."
        )

    def manifest(self) -> dict[str, dict[str, Any]]:
        """file -> {"source", "root", "folder", "hash", "chunks"} for every ingested file (see `file_key`)."""
        return _manifest_of(self._metadata()) if self.exists() else {}

    def save_manifest(self, manifest: dict[str, dict[str, Any]]) -> None:
        """Replace the manifest, and note when."""
        updated = datetime.now(UTC).isoformat(timespec="seconds")
        metadata = {MANIFEST_KEY: manifest, FORMAT_KEY: FORMAT, UPDATED_KEY: updated}
        self.client.update_collection(self.collection, metadata=metadata)

    def upgrade(self) -> None:
        """Rewrite a collection of the old format (manifest keyed by source) so its points carry their file.

        Safe to repeat: a run killed half-way leaves the old manifest, and the next run starts over.
        """
        if not self.exists() or self._metadata().get(FORMAT_KEY) == FORMAT:
            return
        legacy = self._metadata().get(MANIFEST_KEY, {})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            self.client.create_payload_index(self.collection, FILE, models.PayloadSchemaType.KEYWORD)
        for source, entry in legacy.items():
            # The old manifest kept `source` unique in the collection, so it names this file's points alone.
            selector = models.Filter(must=[_match("source", [source])])
            self.client.set_payload(self.collection, {FILE: file_key(entry["root"], source)}, selector, wait=True)
        # Points still without a file were never listed: leftovers of a killed run, which the next run rewrites.
        unlisted = models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key=FILE))])
        self.client.delete(self.collection, points_selector=unlisted, wait=True)
        self.save_manifest(_upgrade_manifest(legacy))

    def upsert(self, points: Iterable[ChunkPoint]) -> None:
        """Write points (same id = overwrite, so a re-run never duplicates)."""
        structs = [
            models.PointStruct(
                id=point.id,
                vector={
                    DENSE: list(point.dense),
                    SPARSE: models.SparseVector(indices=point.sparse[0], values=point.sparse[1]),
                },
                payload=point.payload,
            )
            for point in points
        ]
        if structs:
            self.client.upsert(self.collection, points=structs, wait=True)

    def delete_sources(self, sources: Iterable[str]) -> None:
        """Delete every chunk of the given sources (in every folder)."""
        if sources := set(sources):
            self._delete(models.Filter(must=[_match("source", sources)]))

    def delete_files(self, files: Iterable[str]) -> None:
        """Delete every chunk of the given files (manifest keys)."""
        if files := set(files):
            self._delete(models.Filter(must=[_match(FILE, files)]))

    def delete_stale(self, file: str, keep: Collection[str]) -> None:
        """Delete the chunks of `file` whose ids are not in `keep`: what its previous version left."""
        others = [models.HasIdCondition(has_id=list(keep))] if keep else None
        self._delete(models.Filter(must=[_match(FILE, [file])], must_not=others))

    def _delete(self, selector: models.Filter) -> None:
        self.client.delete(self.collection, points_selector=selector, wait=True)

    def stored_sources(self) -> dict[str, int]:
        """source -> number of chunks actually stored, whichever folder they came from."""
        return self._facet("source")

    def stored_files(self) -> dict[str, int]:
        """file -> number of chunks actually stored (finds leftovers the manifest does not list)."""
        # A collection of the old format has no file key (nor, on a server, the index a facet needs).
        return self._facet(FILE) if self.exists() and self._metadata().get(FORMAT_KEY) == FORMAT else {}

    def _facet(self, key: str) -> dict[str, int]:
        if not self.exists():
            return {}
        hits = self.client.facet(self.collection, key=key, limit=1_000_000, exact=True).hits
        return {str(hit.value): hit.count for hit in hits}

    def stats(self) -> dict[str, Any]:
        """What the collection holds: chunks, sources, how it was embedded, when it last changed."""
        exists = self.exists()
        metadata = self._metadata() if exists else {}
        fingerprint = metadata.get(FINGERPRINT_KEY)
        return {
            "collection": self.collection,
            "exists": exists,
            "chunks": self.count(),
            "sources": sorted(entry["source"] for entry in _manifest_of(metadata).values()),
            "embedding": describe_fingerprint(fingerprint) if fingerprint else None,
            "updated": metadata.get(UPDATED_KEY),
        }

    def count(self) -> int:
        """Number of chunks stored."""
        return self.client.count(self.collection, exact=True).count if self.exists() else 0

    def search_dense(
        self, vector: Sequence[float], *, limit: int, where: dict[str, Sequence[str]] | None = None
    ) -> list[Match]:
        """The `limit` chunks nearest `vector` by cosine, best first; `where` maps a payload key to allowed values."""
        return self._query(list(vector), DENSE, limit, where)

    def search_sparse(
        self,
        sparse: tuple[list[int], list[float]],
        *,
        limit: int,
        where: dict[str, Sequence[str]] | None = None,
    ) -> list[Match]:
        """The `limit` chunks with the best IDF-weighted keyword dot product, best first; no terms, no hits."""
        if not sparse[0]:  # a query of stop words only has no keyword list to offer
            return []
        return self._query(models.SparseVector(indices=sparse[0], values=sparse[1]), SPARSE, limit, where)

    def _query(self, query: Any, using: str, limit: int, where: dict[str, Sequence[str]] | None) -> list[Match]:
        try:
            points = self.client.query_points(
                self.collection,
                query=query,
                using=using,
                query_filter=_filter(where),
                limit=limit,
                with_payload=True,
                with_vectors=[DENSE],
            ).points
        except (ValueError, UnexpectedResponse):  # local mode and a server say "not found" differently
            if not self.exists():
                raise self._missing() from None
            raise
        if not points:
            self.require_points()  # no hits at all: an empty collection, or filters that exclude everything
        return [Match(str(p.id), p.score, p.payload or {}, list(p.vector[DENSE])) for p in points]

    def metadata_value(self, key: str) -> Any | None:
        """A small JSON record stored with the collection under `key`, or None (no record, or no collection)."""
        return self._metadata().get(key) if self.exists() else None

    def set_metadata_value(self, key: str, value: Any) -> None:
        """Store a small JSON record with the collection (it travels with it, like the manifest)."""
        self.client.update_collection(self.collection, metadata={key: value})

    def require_points(self) -> None:
        """Raise `CollectionMissingError` unless the collection exists and holds chunks."""
        if self.count() == 0:
            raise self._missing()

    def _missing(self) -> CollectionMissingError:
        return CollectionMissingError(
            f"Collection '{self.collection}' is empty or missing: run `rag-ingest data/kb` first "
            "(or set RAG_COLLECTION)."
        )


def file_key(root: str, source: str) -> str:
    """A file's identity: the folder it was ingested from (absolute) joined with its `source`."""
    return (Path(root) / source).as_posix()


def _manifest_of(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    manifest = dict(metadata.get(MANIFEST_KEY, {}))
    return manifest if metadata.get(FORMAT_KEY) == FORMAT else _upgrade_manifest(manifest)


def _upgrade_manifest(legacy: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # The old format did not say whether a root was given as a folder; a nested source proves it was.
    # A flat one is taken as a single file until its folder is ingested again (then `folder` turns true).
    return {
        file_key(entry["root"], source): {**entry, "source": source, "folder": "/" in source}
        for source, entry in legacy.items()
    }


def _match(key: str, values: Iterable[str]) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchAny(any=sorted(set(values))))


def _filter(where: dict[str, Sequence[str]] | None) -> models.Filter | None:
    conditions = [
        models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))
        for key, values in (where or {}).items()
        if values
    ]
    return models.Filter(must=conditions) if conditions else None


def describe_fingerprint(fingerprint: dict[str, Any]) -> str:
    """A short human description, e.g. 'all-MiniLM-L6-v2 (384-d), chunks of 254 tokens'."""
    chunker = fingerprint.get("chunker", {})
    return (
        f"{fingerprint.get('embed_model')} ({fingerprint.get('dim')}-d), "
        f"chunks of {chunker.get('chunk_tokens')} tokens with {chunker.get('overlap_tokens')} overlap"
    )


__all__ = ["ChunkPoint", "Match", "Store", "StoreError", "file_key", "open_client"]
