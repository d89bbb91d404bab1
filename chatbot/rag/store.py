"""The one module that talks to Qdrant: Qdrant Edge in-process (the default), or qdrant-client's local folder,
in-memory or server mode; the same `Store` API over each (Edge's own calls live in `_edge`).

A collection holds one point per chunk, with a named dense vector and a named
sparse (keyword) vector. Its metadata carries two small records: the embedding
*fingerprint* (model, dimension, chunker settings) that every writer must match,
and the *manifest* (file -> source, root, content hash, chunk count) that makes
re-ingestion incremental. Keeping both inside the collection means they travel
with it to a server; Edge has no collection metadata, so there they sit in a file
beside the shard, written only after the shard is flushed.

A file's identity is its path, the folder it was ingested from joined with its
`source` (see `file_key`): two folders may both hold a `guide.md`, so `source`
alone is not unique. Every point carries that identity in its `file` payload
key, and replacing or removing a file's chunks matches on it. Collections made
before files had an identity (manifest keyed by `source`, points without
`file`) read as if upgraded, and `upgrade` rewrites them once, on the next write.
"""

from __future__ import annotations

import atexit
import json
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from chatbot.core.config import Settings, redact_url
from chatbot.core.errors import CollectionMissingError, FingerprintMismatchError, StoreError
from chatbot.rag._client import ClientEngine, open_local_client
from chatbot.rag._points import FILE, ChunkPoint, Match, Selector, select

if TYPE_CHECKING:
    from chatbot.rag._edge import EdgeCollection

MANIFEST_KEY = "ragtune_manifest"
FINGERPRINT_KEY = "ragtune_fingerprint"
UPDATED_KEY = "ragtune_updated"
FORMAT_KEY = "ragtune_format"
FORMAT = 2  # 1 (no key): manifest keyed by source; 2: keyed by file, points carry FILE
_RESERVED_KEYS = (MANIFEST_KEY, FINGERPRINT_KEY, UPDATED_KEY, FORMAT_KEY)
SERVER_TIMEOUT = 30  # seconds per request to a Qdrant server: room for a waited-for batch upsert on a busy one


def open_client(settings: Settings, *, location: str | None = None) -> QdrantClient:
    """A qdrant-client for the settings: server if `RAG_QDRANT_URL`, else local mode's folder (or `location`)."""
    if location is not None:
        return QdrantClient(location=location)
    if settings.qdrant_url:
        return _server_client(settings)
    return open_local_client(settings.qdrant_path)


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


# Stores not closed yet, closed at interpreter exit: a store a script leaves open (an engine in a global,
# say) is otherwise closed by QdrantClient.__del__ during shutdown, when the imports its close needs fail
# with an ImportError traceback.
_open_stores: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    for store in list(_open_stores):
        store.close()


class Store:
    """One collection in one engine: a qdrant-client (in memory, local folder, server) or a Qdrant Edge shard.

    `Store(client, name)` wraps a qdrant-client; `Store.edge(folder, name)` opens Edge; `Store.open(settings)`
    picks as the settings say. `shards` and `replicas` lay out a new collection on a cluster.
    """

    def __init__(
        self,
        client: QdrantClient | EdgeCollection,
        collection: str,
        *,
        shards: int | None = None,
        replicas: int | None = None,
    ) -> None:
        if client is None:  # what `store.client` is on Edge: open another collection with `Store.open` or `edge`
            raise TypeError("Store needs a QdrantClient or an EdgeCollection, not None")
        if isinstance(client, QdrantClient):
            self.engine: ClientEngine | EdgeCollection = ClientEngine(client, collection, shards, replicas)
        else:
            self.engine = client
        self.collection = collection
        _open_stores.add(self)

    @classmethod
    def open(cls, settings: Settings, collection: str | None = None) -> Store:
        """Open the configured store and collection (the collection may not exist yet)."""
        name = collection or settings.collection
        if settings.qdrant_url or settings.qdrant_engine == "local":
            return cls(open_client(settings), name, shards=settings.qdrant_shards, replicas=settings.qdrant_replicas)
        return cls.edge(settings.qdrant_path, name)

    @classmethod
    def edge(cls, folder: Path, collection: str) -> Store:
        """The collection in Qdrant Edge under `folder` (`RAG_QDRANT_PATH`), migrated once from local mode."""
        from chatbot.rag._edge import EdgeCollection  # it imports this module's types

        return cls(EdgeCollection(Path(folder), collection), collection)

    @property
    def client(self) -> QdrantClient | None:
        """The qdrant-client underneath, or None for Edge."""
        return self.engine.client if isinstance(self.engine, ClientEngine) else None

    def close(self) -> None:
        """Release the engine (and the folder's lock)."""
        _open_stores.discard(self)
        self.engine.close()

    def exists(self) -> bool:
        """Whether the collection has been created."""
        return self.engine.exists()

    def _metadata(self) -> dict[str, Any]:
        return self.engine.metadata() if self.exists() else {}

    def fingerprint(self) -> dict[str, Any] | None:
        """The fingerprint the collection was built with, or None if it has none."""
        return self._metadata().get(FINGERPRINT_KEY)

    def create(self, fingerprint: dict[str, Any]) -> None:
        """Create the collection for vectors of `fingerprint["dim"]` dimensions."""
        metadata = {FINGERPRINT_KEY: fingerprint, MANIFEST_KEY: {}, FORMAT_KEY: FORMAT}
        self.engine.create(fingerprint["dim"], metadata)

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        self.engine.drop()

    def metadata_value(self, key: str) -> Any | None:
        """A small JSON record stored with the collection under `key`, or None."""
        return self._metadata().get(key)

    def set_metadata_value(self, key: str, value: Any) -> None:
        """Store a small JSON record with the collection (it travels with it, and `--recreate` drops it)."""
        if key in _RESERVED_KEYS:
            raise StoreError(f"metadata key {key!r} is ragtune's own: pick another name.")
        json.dumps(value)  # raises TypeError now, not half-way into an engine, for a value JSON cannot hold
        if not self.exists():
            raise self._missing()
        self.engine.update_metadata({key: value})

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
        return _manifest_of(self._metadata())

    def save_manifest(self, manifest: dict[str, dict[str, Any]]) -> None:
        """Replace the manifest, and note when (after every write before it is durable)."""
        updated = datetime.now(UTC).isoformat(timespec="seconds")
        self.engine.update_metadata({MANIFEST_KEY: manifest, FORMAT_KEY: FORMAT, UPDATED_KEY: updated})

    def upgrade(self) -> None:
        """Rewrite a collection of the old format (manifest keyed by source) so its points carry their file.

        Safe to repeat: a run killed half-way leaves the old manifest, and the next run starts over.
        """
        metadata = self._metadata()
        if not metadata or metadata.get(FORMAT_KEY) == FORMAT:
            return
        legacy = metadata.get(MANIFEST_KEY, {})
        self.engine.create_index(FILE)
        for source, entry in legacy.items():
            # The old manifest kept `source` unique in the collection, so it names this file's points alone.
            self.engine.set_payload(Selector(match=(("source", (source,)),)), {FILE: file_key(entry["root"], source)})
        # Points still without a file were never listed: leftovers of a killed run, which the next run rewrites.
        self.engine.delete(Selector(missing=FILE))
        self.save_manifest(_upgrade_manifest(legacy))

    def upsert(self, points: Iterable[ChunkPoint]) -> None:
        """Write points (same id = overwrite, so a re-run never duplicates)."""
        self.engine.upsert(list(points))

    def delete_sources(self, sources: Iterable[str]) -> None:
        """Delete every chunk of the given sources (in every folder)."""
        if selector := select({"source": sources}):
            self.engine.delete(selector)

    def delete_files(self, files: Iterable[str]) -> None:
        """Delete every chunk of the given files (manifest keys)."""
        if selector := select({FILE: files}):
            self.engine.delete(selector)

    def delete_stale(self, file: str, keep: Collection[str]) -> None:
        """Delete the chunks of `file` whose ids are not in `keep`: what its previous version left."""
        self.engine.delete(Selector(match=((FILE, (file,)),), keep_ids=tuple(sorted(keep))))

    def stored_sources(self) -> dict[str, int]:
        """source -> number of chunks actually stored, whichever folder they came from."""
        return self.engine.facet("source") if self.exists() else {}

    def stored_files(self) -> dict[str, int]:
        """file -> number of chunks actually stored (finds leftovers the manifest does not list)."""
        # A collection of the old format has no file key (nor, on a server, the index a facet needs).
        return self.engine.facet(FILE) if self._metadata().get(FORMAT_KEY) == FORMAT else {}

    def stats(self) -> dict[str, Any]:
        """What the collection holds: chunks, sources, how it was embedded, when it last changed."""
        metadata = self._metadata()
        fingerprint = metadata.get(FINGERPRINT_KEY)
        return {
            "collection": self.collection,
            "exists": self.exists(),
            "chunks": self.count(),
            "sources": sorted(entry["source"] for entry in _manifest_of(metadata).values()),
            "embedding": describe_fingerprint(fingerprint) if fingerprint else None,
            "updated": metadata.get(UPDATED_KEY),
        }

    def count(self) -> int:
        """Number of chunks stored."""
        return self.engine.count() if self.exists() else 0

    def records(self) -> Iterator[ChunkPoint]:
        """Every stored chunk with its vectors and payload, in no particular order."""
        return self.engine.records() if self.exists() else iter(())

    def optimize(self) -> None:
        """Build the search indexes after a bulk write (Edge does it only when asked; others need nothing)."""
        self.engine.optimize()

    def search_dense(
        self, vector: Sequence[float], *, limit: int, where: Mapping[str, Sequence[str]] | None = None
    ) -> list[Match]:
        """The `limit` chunks nearest `vector` by cosine, best first; `where` maps a payload key to its values."""
        return self._found(self.engine.search_dense(vector, limit=limit, where=select(where)))

    def search_sparse(
        self,
        sparse: tuple[list[int], list[float]],
        *,
        limit: int,
        where: Mapping[str, Sequence[str]] | None = None,
    ) -> list[Match]:
        """The `limit` best keyword matches (IDF-weighted dot product), best first; no keywords, no matches."""
        if not sparse[0]:
            self.require_points()
            return []
        return self._found(self.engine.search_sparse(sparse, limit=limit, where=select(where)))

    def _found(self, matches: list[Match]) -> list[Match]:
        if not matches:
            self.require_points()  # no hits at all: an empty collection, or filters that exclude everything
        return matches

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


def describe_fingerprint(fingerprint: dict[str, Any]) -> str:
    """A short human description, e.g. 'all-MiniLM-L6-v2 (384-d), chunks of 254 tokens'."""
    chunker = fingerprint.get("chunker", {})
    return (
        f"{fingerprint.get('embed_model')} ({fingerprint.get('dim')}-d), "
        f"chunks of {chunker.get('chunk_tokens')} tokens with {chunker.get('overlap_tokens')} overlap"
    )


__all__ = ["ChunkPoint", "Match", "Selector", "Store", "StoreError", "file_key", "open_client", "open_local_client"]
