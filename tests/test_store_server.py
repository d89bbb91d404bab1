"""The store against a Qdrant server: the same round trip as in memory, the collection layout, the errors.

No Qdrant server binary can be installed from the registries this project uses (PyPI has the
client and `qdrant-edge-py`, an in-process engine; Debian has neither), so the server run of
the round trip is skipped unless RAG_QDRANT_URL names one (`docker run -p 6333:6333
qdrant/qdrant`). What needs no server runs always: the round trip in memory, the layout a new
collection asks for, and the messages for a server that is down, refuses the key, or is not Qdrant.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from qdrant_client import QdrantClient

from chatbot.core.config import Settings
from chatbot.core.errors import CollectionMissingError, StoreError
from chatbot.rag import store as store_module
from chatbot.rag.store import FORMAT_KEY, MANIFEST_KEY, ChunkPoint, Store

FINGERPRINT = {"embed_model": "fake", "dim": 4, "chunker": {"chunk_tokens": 60, "overlap_tokens": 5}}
SERVER = Settings.from_env().qdrant_url  # the one place a test looks at the environment: Settings reads it


@pytest.fixture(params=["memory", "server"])
def store(request):
    if request.param == "memory":
        opened = Store(QdrantClient(location=":memory:"), "kb")
    elif SERVER is None:
        pytest.skip(
            "no Qdrant server: none is installable from PyPI or Debian here; "
            "set RAG_QDRANT_URL (docker run -p 6333:6333 qdrant/qdrant) to run this against one"
        )
    else:
        opened = Store.open(Settings.from_env(), f"ragtune_test_{uuid.uuid4().hex[:8]}")
    yield opened
    if opened.exists():
        opened.drop()
    opened.close()


def point(number: int, source: str, dense: list[float]) -> ChunkPoint:
    return ChunkPoint(
        id=str(uuid.UUID(int=number)),
        dense=dense,
        sparse=([number], [1.0]),
        payload={"source": source, "section": "", "text": f"chunk {number} of {source}"},
    )


def test_the_round_trip_is_the_same_in_memory_and_on_a_server(store):
    with pytest.raises(CollectionMissingError):
        store.require_points()
    store.create(FINGERPRINT)
    store.upsert([point(1, "a.md", [1, 0, 0, 0]), point(2, "a.md", [0, 1, 0, 0]), point(3, "b.md", [0, 0, 1, 0])])
    store.save_manifest({"a.md": {"hash": "x", "root": ".", "chunks": 2}})

    best = store.search_dense([1, 0.1, 0, 0], limit=2)
    keyword = store.search_sparse(([3], [1.0]), limit=1, where={"source": ["b.md"]})
    store.set_metadata_value("ragtune_note", {"cut": 0.5})

    assert [match.payload["text"] for match in best] == ["chunk 1 of a.md", "chunk 2 of a.md"]
    assert keyword[0].payload["source"] == "b.md" and store.search_sparse(([], []), limit=1) == []
    assert store.metadata_value("ragtune_note") == {"cut": 0.5} and store.metadata_value("absent") is None
    assert store.stored_sources() == {"a.md": 2, "b.md": 1}
    assert store.fingerprint() == FINGERPRINT and store.manifest() == {"a.md": {"hash": "x", "root": ".", "chunks": 2}}
    store.delete_sources(["a.md"])
    assert store.count() == 1


def test_files_are_replaced_and_removed_by_their_key_and_an_old_collection_is_upgraded(store):
    store.create(FINGERPRINT)
    a, b = point(1, "guide.md", [1, 0, 0, 0]), point(2, "guide.md", [0, 1, 0, 0])
    store.upsert([a, b, point(3, "notes.md", [0, 0, 1, 0]), point(4, "lost.md", [0, 0, 0, 1])])
    legacy = {
        "guide.md": {"hash": "x", "root": "/a", "chunks": 2},
        "notes.md": {"hash": "y", "root": "/a", "chunks": 1},
    }
    # What rag-ingest wrote before files had their own key: no format, a manifest keyed by source.
    store.client.update_collection(store.collection, metadata={MANIFEST_KEY: legacy, FORMAT_KEY: None})

    assert store.manifest()["/a/guide.md"] == {**legacy["guide.md"], "source": "guide.md", "folder": False}
    assert store.stored_files() == {}  # nothing to count by file until the upgrade
    store.upgrade()

    assert store.stored_files() == {"/a/guide.md": 2, "/a/notes.md": 1}  # lost.md was never listed: gone
    assert set(store.manifest()) == {"/a/guide.md", "/a/notes.md"}
    store.delete_stale("/a/guide.md", {a.id})
    store.delete_files(["/a/notes.md"])
    assert store.stored_files() == {"/a/guide.md": 1}


class RecordingClient(QdrantClient):
    """An in-memory client that records how collections are created (a real QdrantClient otherwise)."""

    def __init__(self) -> None:
        super().__init__(location=":memory:")
        self.created: list[dict[str, Any]] = []

    def create_collection(self, collection_name: str, **kwargs: Any) -> bool:
        self.created.append(kwargs)
        return super().create_collection(collection_name, **kwargs)


def test_a_new_collection_keeps_payload_on_disk_and_takes_the_shards_and_replicas_set(monkeypatch):
    client = RecordingClient()
    monkeypatch.setattr(store_module, "open_client", lambda settings: client)
    settings = Settings(qdrant_url="http://qdrant.internal:6333", qdrant_shards=4, qdrant_replicas=2)

    Store.open(settings).create(FINGERPRINT)
    Store(client, "plain").create(FINGERPRINT)

    layout, plain = client.created
    assert (layout["shard_number"], layout["replication_factor"], layout["on_disk_payload"]) == (4, 2, True)
    assert (plain["shard_number"], plain["replication_factor"]) == (None, None)  # the server's defaults
    assert "hnsw_config" not in layout  # HNSW keeps the server's defaults


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_cannot_be_reached_says_how_to_start_one_or_go_local():
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(StoreError) as caught:
        Store.open(Settings(qdrant_url=url))
    message = str(caught.value)
    assert message.startswith(f"cannot reach RAG_QDRANT_URL={url} (")
    assert "Connection refused" in message
    assert message.endswith("start Qdrant (docker run -p 6333:6333 qdrant/qdrant) or unset it to use local mode.")


class _Answers(BaseHTTPRequestHandler):
    status = 401

    def do_GET(self) -> None:
        body = json.dumps({"status": {"error": "Must provide an API key or an Authorization bearer token"}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
@pytest.mark.parametrize(
    ("status", "says"),
    [(401, "refused the request (401): set RAG_QDRANT_API_KEY"), (404, "answered 404 Not Found, not like a Qdrant")],
)
def test_a_wrong_key_or_a_server_that_is_not_qdrant_is_a_clear_error(status, says):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Answers,), {"status": status}))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(StoreError, match=rf"RAG_QDRANT_URL=http://127.0.0.1:\d+ .*{re.escape(says)}"):
            Store.open(Settings(qdrant_url=f"http://127.0.0.1:{httpd.server_address[1]}", qdrant_api_key="wrong"))
    finally:
        httpd.shutdown()
        httpd.server_close()
