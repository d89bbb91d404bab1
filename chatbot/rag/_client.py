"""The qdrant-client engine behind `Store`: in memory, local mode's folder (brute force, one process) or a server."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from chatbot.core.errors import StoreLockedError
from chatbot.rag._points import DENSE, FILE, SPARSE, ChunkPoint, Match, Selector


def open_local_client(folder: Path) -> QdrantClient:
    """qdrant-client's local mode on `folder`, or `StoreLockedError` if another process holds it."""
    try:
        return QdrantClient(path=str(folder))
    except RuntimeError as error:
        if "already accessed" not in str(error):
            raise
        raise StoreLockedError(
            f"The local Qdrant store {folder} is in use by another process (probably the "
            "running app): local mode allows one process per folder. Stop the app and run again, re-ingest "
            "from the app's Knowledge base page, or use a Qdrant server (RAG_QDRANT_URL)."
        ) from error


class ClientEngine:
    """One collection through qdrant-client: in memory, a local folder (brute force, one process) or a server."""

    def __init__(self, client: QdrantClient, collection: str, shards: int | None, replicas: int | None) -> None:
        self.client = client
        self.collection = collection
        self.shards = shards
        self.replicas = replicas

    def exists(self) -> bool:
        return self.client.collection_exists(self.collection)

    def metadata(self) -> dict[str, Any]:
        return self.client.get_collection(self.collection).config.metadata or {}

    def update_metadata(self, values: dict[str, Any]) -> None:
        self.client.update_collection(self.collection, metadata=values)  # merged into what is there

    def create(self, dim: int, metadata: dict[str, Any]) -> None:
        self.client.create_collection(
            self.collection,
            vectors_config={DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata=metadata,
            # Payload (the chunk text) stays on disk on a server, so RAM holds vectors and indexes;
            # HNSW keeps the server's defaults (m=16, ef_construct=100). Local mode ignores all three.
            on_disk_payload=True,
            shard_number=self.shards,
            replication_factor=self.replicas,
        )
        for key in ("source", "section", FILE):  # a server needs them for filters and facets
            self.create_index(key)

    def create_index(self, key: str) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")  # local mode says so
            self.client.create_payload_index(self.collection, key, models.PayloadSchemaType.KEYWORD)

    def drop(self) -> None:
        self.client.delete_collection(self.collection)

    def close(self) -> None:
        self.client.close()

    def upsert(self, points: Sequence[ChunkPoint]) -> None:
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

    def delete(self, selector: Selector) -> None:
        self.client.delete(self.collection, points_selector=_filter(selector), wait=True)

    def set_payload(self, selector: Selector, payload: dict[str, Any]) -> None:
        self.client.set_payload(self.collection, payload, _filter(selector), wait=True)

    def facet(self, key: str) -> dict[str, int]:
        hits = self.client.facet(self.collection, key=key, limit=1_000_000, exact=True).hits
        return {str(hit.value): hit.count for hit in hits}

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def optimize(self) -> None:
        """Nothing to do: a server optimizes in the background, local mode has no index."""

    def records(self) -> Iterator[ChunkPoint]:
        offset = None
        while True:
            batch, offset = self.client.scroll(
                self.collection, limit=1_000, offset=offset, with_payload=True, with_vectors=True
            )
            for record in batch:
                vectors = record.vector if isinstance(record.vector, dict) else {}
                keywords = vectors.get(SPARSE)
                sparse = (list(keywords.indices), list(keywords.values)) if keywords is not None else ([], [])
                yield ChunkPoint(str(record.id), list(vectors.get(DENSE, [])), sparse, record.payload or {})
            if offset is None:
                return

    def search_dense(self, vector: Sequence[float], *, limit: int, where: Selector | None) -> list[Match]:
        return self._query(query=list(vector), using=DENSE, query_filter=_filter(where), limit=limit)

    def search_sparse(
        self, sparse: tuple[list[int], list[float]], *, limit: int, where: Selector | None
    ) -> list[Match]:
        keywords = models.SparseVector(indices=list(sparse[0]), values=list(sparse[1]))
        return self._query(query=keywords, using=SPARSE, query_filter=_filter(where), limit=limit)

    def _query(self, **request: Any) -> list[Match]:
        try:
            points = self.client.query_points(
                self.collection, **request, with_payload=True, with_vectors=[DENSE]
            ).points
        except (ValueError, UnexpectedResponse):  # local mode and a server say "not found" differently
            if not self.exists():
                return []
            raise
        return [Match(str(p.id), p.score, p.payload or {}, list(p.vector[DENSE])) for p in points]


def _filter(selector: Selector | None) -> models.Filter | None:
    if selector is None:
        return None
    must: list[models.Condition] = [
        models.FieldCondition(key=key, match=models.MatchAny(any=list(values))) for key, values in selector.match
    ]
    if selector.missing is not None:
        must.append(models.IsEmptyCondition(is_empty=models.PayloadField(key=selector.missing)))
    must_not = [models.HasIdCondition(has_id=list(selector.keep_ids))] if selector.keep_ids else None
    return models.Filter(must=must, must_not=must_not)


__all__ = ["ClientEngine", "open_local_client"]
