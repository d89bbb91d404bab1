"""The store's engines: the setting that picks one, the search primitives on each, Edge's lock, its
crash-safe records, and the one-off migration of a local-mode collection into Edge."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import new_store
from fakes import FakeEmbeddings, count_words

from chatbot.core.config import Settings
from chatbot.core.errors import CollectionMissingError, SettingsError, StoreError, StoreLockedError
from chatbot.rag import _edge
from chatbot.rag.store import FINGERPRINT_KEY, ChunkPoint, Store
from ingest.pipeline import run_ingest
from ingest.split import ChunkerSettings

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "billing.md": "# Billing\n\nInvoices are sent monthly.\n\n## Refunds\n\nRefunds take 5 days.\n",
    "setup/install.md": "# Install\n\n## Windows\n\nRun the installer as administrator.\n",
    "notes.txt": "Plain notes about the product, with no headings at all.\n",
}


def write_tree(root: Path) -> Path:
    for name, text in PAGES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def ingest(root: Path, store: Store, embeddings: FakeEmbeddings | None = None):
    embeddings = embeddings or FakeEmbeddings()
    return run_ingest(
        [root],
        store=store,
        load_embeddings=lambda: embeddings,
        embed_model="fake",
        count_tokens=count_words,
        chunker=ChunkerSettings(chunk_tokens=12, overlap_tokens=2),
    )


def snapshot(store: Store) -> dict[str, tuple]:
    """Every point as (payload, dense rounded, sparse): what two stores must agree on."""
    return {
        p.id: (p.payload, [round(v, 5) for v in p.dense], (p.sparse[0], [round(v, 5) for v in p.sparse[1]]))
        for p in store.records()
    }


# -- the setting ---------------------------------------------------------------------------------------------


def test_edge_is_the_default_engine_and_keeps_its_data_apart_from_local_mode(tmp_path):
    assert Settings.from_env({}).qdrant_engine == "edge"
    store = Store.open(Settings(qdrant_path=tmp_path))
    store.create({"dim": 4})
    store.close()
    assert (tmp_path / "edge" / "kb" / "ragtune.json").is_file() and not (tmp_path / "collection").exists()

    local = Store.open(Settings.from_env({"RAG_QDRANT_PATH": str(tmp_path), "RAG_QDRANT_ENGINE": "LOCAL"}))
    assert local.client is not None and not local.exists()  # its own collections, not Edge's
    local.close()


def test_an_unknown_engine_names_the_variable_the_value_and_the_choices():
    with pytest.raises(SettingsError, match=r"RAG_QDRANT_ENGINE=lance .*edge or local"):
        Settings.from_env({"RAG_QDRANT_ENGINE": "lance"})


# -- search primitives and records, on every engine -----------------------------------------------------------

VECTORS = {"a": [1.0, 0.0, 0.0, 0.0], "b": [0.6, 0.8, 0.0, 0.0], "c": [0.0, 0.0, 1.0, 0.0]}
WORDS = {"a": [1, 2], "b": [2, 3], "c": [3]}


def fill(store: Store) -> dict[str, str]:
    store.create({"dim": 4})
    ids = {name: f"00000000-0000-0000-0000-00000000000{n}" for n, name in enumerate(VECTORS, 1)}
    store.upsert(
        ChunkPoint(ids[name], VECTORS[name], (WORDS[name], [1.0] * len(WORDS[name])), {"source": f"{name}.md"})
        for name in VECTORS
    )
    return {value: key for key, value in ids.items()}


def test_dense_search_scores_by_cosine_best_first_and_filters(store):
    names = fill(store)
    found = store.search_dense([1.0, 0.0, 0.0, 0.0], limit=3)
    assert [names[m.id] for m in found] == ["a", "b", "c"]
    assert [round(m.score, 4) for m in found] == [1.0, 0.6, 0.0]
    assert found[1].payload == {"source": "b.md"} and found[1].dense == pytest.approx(VECTORS["b"])
    only = store.search_dense([1.0, 0.0, 0.0, 0.0], limit=3, where={"source": ["c.md", "b.md"]})
    assert [names[m.id] for m in only] == ["b", "c"]


def test_sparse_search_weighs_rare_words_by_idf(store):
    names = fill(store)
    found = store.search_sparse(([1, 2], [1.0, 1.0]), limit=3)
    assert [names[m.id] for m in found] == ["a", "b"]
    # Qdrant's IDF: ln(1 + (N - n + 0.5) / (n + 0.5)) with N=3 points, n holding the word.
    idf = {1: math.log(1 + 2.5 / 1.5), 2: math.log(1 + 1.5 / 2.5)}
    assert [m.score for m in found] == pytest.approx([idf[1] + idf[2], idf[2]], rel=1e-4)
    assert store.search_sparse(([], []), limit=3) == []


def test_every_search_says_to_ingest_when_the_collection_is_missing_or_empty(store):
    for search in (
        lambda: store.search_dense([1.0, 0.0, 0.0, 0.0], limit=2),
        lambda: store.search_sparse(([1], [1.0]), limit=2),
        lambda: store.search_sparse(([], []), limit=2),
    ):
        with pytest.raises(CollectionMissingError, match="rag-ingest"):
            search()
    store.create({"dim": 4})
    with pytest.raises(CollectionMissingError):
        store.search_dense([1.0, 0.0, 0.0, 0.0], limit=2)


def test_hybrid_retrieval_ranks_alike_on_both_engines(tmp_path):
    from chatbot.rag.retrieval import fuse, mmr_order

    results = []
    for engine in ("memory", "edge"):
        store = new_store(engine, tmp_path / engine)
        names = fill(store)
        dense, keywords = [0.8, 0.6, 0.0, 0.0], ([2, 3], [1.0, 2.0])  # no ties, which engines may break apart
        fused = fuse(store.search_dense(dense, limit=3), store.search_sparse(keywords, limit=3), dense)
        diverse = mmr_order(fused, diversity=0.5)
        assert names[fused[0].match.id] == "b"
        # The same scores for the same points; equal scores may come in either order.
        results.append([sorted((names[r.match.id], round(r.score, 4)) for r in found) for found in (fused, diverse)])
        store.close()
    assert results[0] == results[1]


def test_metadata_records_round_trip_and_ragtunes_own_keys_are_refused(store):
    with pytest.raises(CollectionMissingError):
        store.set_metadata_value("abstain", {"threshold": 0.41})
    store.create({"dim": 4})
    assert store.metadata_value("abstain") is None
    store.set_metadata_value("abstain", {"threshold": 0.41})
    assert store.metadata_value("abstain") == {"threshold": 0.41}
    assert store.fingerprint() == {"dim": 4}  # untouched by the record beside it
    with pytest.raises(StoreError, match="ragtune's own"):
        store.set_metadata_value(FINGERPRINT_KEY, {})
    store.drop()
    assert store.metadata_value("abstain") is None


def test_edge_keeps_points_and_records_across_a_reopen(tmp_path):
    store = Store.edge(tmp_path, "kb")
    fill(store)
    store.set_metadata_value("abstain", 0.4)
    before = snapshot(store)
    store.close()
    store = Store.edge(tmp_path, "kb")
    assert snapshot(store) == before and store.metadata_value("abstain") == 0.4
    store.close()


# -- one process at a time ------------------------------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from chatbot.rag.store import Store
store = Store.edge(Path(sys.argv[1]), "kb")
print("holding", flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(60)
def test_a_second_process_gets_a_clear_lock_error_until_the_first_is_gone_even_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreLockedError, match=r"in use by another process.*RAG_QDRANT_URL"):
            Store.edge(tmp_path, "kb")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    Store.edge(tmp_path, "kb").close()  # the kernel let the lock go with the killed process


# -- crash safety ---------------------------------------------------------------------------------------------

KILLED_INGEST = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, "tests")
from ingest import pipeline
from chatbot.rag.store import Store
import test_store_engines as t

class Killed(Store):
    calls = 0

    def upsert(self, points):
        super().upsert(points)
        Killed.calls += 1
        if Killed.calls == 2:  # the second file's points are written, its manifest entry is not
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind

pipeline.BATCH_SIZE = 2
pipeline.WINDOW_BATCHES = 1
t.ingest(Path(sys.argv[2]), Killed.edge(Path(sys.argv[1]), "kb"))
"""


@pytest.mark.timeout(120)
def test_an_edge_ingest_killed_by_sigkill_is_exact_after_a_rerun(tmp_path):
    root = write_tree(tmp_path / "kb")
    folder = tmp_path / "qdrant"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_INGEST, str(folder), str(root)], cwd=ROOT, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = Store.edge(folder, "kb")
    assert store.count() > 0 and len(store.manifest()) < len(PAGES)  # killed half-way
    ingest(root, store)
    expected = new_store("memory", None)
    ingest(root, expected)
    assert snapshot(store) == snapshot(expected) and store.manifest() == expected.manifest()
    store.close()
    expected.close()


def test_the_records_are_written_only_after_the_shard_is_flushed(tmp_path, monkeypatch):
    store = Store.edge(tmp_path, "kb")
    store.create({"dim": 4})
    order = []
    shard = store.engine._open_shard()
    monkeypatch.setattr(store.engine, "_open_shard", lambda: FlushSpy(shard, order))
    monkeypatch.setattr(_edge, "atomic_write_text", lambda path, text: order.append("records"))
    store.save_manifest({})
    assert order == ["flush", "records"]
    store.close()


class FlushSpy:
    def __init__(self, shard, order: list[str]) -> None:
        self.shard, self.order = shard, order

    def flush(self) -> None:
        self.order.append("flush")
        self.shard.flush()


# -- migration from local mode -------------------------------------------------------------------------------


def local_collection(folder: Path, root: Path) -> dict[str, tuple]:
    """An older version's local-mode collection of `root` in `folder`; returns its points."""
    local = Store.open(Settings(qdrant_path=folder, qdrant_engine="local"))
    ingest(root, local)
    local.set_metadata_value("abstain", 0.4)
    points = snapshot(local)
    local.close()
    return points


def test_a_local_mode_collection_is_migrated_into_edge_once_and_left_as_it_was(tmp_path):
    folder = tmp_path / "qdrant"
    points = local_collection(folder, write_tree(tmp_path / "kb"))
    local_files = sorted(p.relative_to(folder) for p in (folder / "collection").rglob("*"))

    store = Store.open(Settings(qdrant_path=folder))  # the new default, Edge
    assert snapshot(store) == points and store.count() == len(points)
    assert store.fingerprint()["embed_model"] == "fake" and store.metadata_value("abstain") == 0.4
    assert len(store.manifest()) == len(PAGES)
    assert store.search_dense(points[next(iter(points))][1], limit=1)[0].id == next(iter(points))
    assert ingest(tmp_path / "kb", store).added == []  # the manifest came along: nothing to redo
    store.drop()  # a rebuild, say: the old local collection must not come back on the next open
    store.close()

    assert sorted(p.relative_to(folder) for p in (folder / "collection").rglob("*")) == local_files
    assert not Store.open(Settings(qdrant_path=folder)).exists()


def test_a_migration_killed_half_way_leaves_no_collection_and_is_redone(tmp_path, monkeypatch):
    folder = tmp_path / "qdrant"
    points = local_collection(folder, write_tree(tmp_path / "kb"))
    copy = _edge._copy_points

    def interrupted(client, collection, shard):
        copy(client, collection, shard)
        raise KeyboardInterrupt  # after the points, before the records and the rename

    monkeypatch.setattr(_edge, "_copy_points", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Store.open(Settings(qdrant_path=folder))
    assert not (folder / "edge" / "kb").exists()
    monkeypatch.undo()

    store = Store.open(Settings(qdrant_path=folder))
    assert snapshot(store) == points
    store.close()


def test_a_local_collection_rag_ingest_did_not_make_says_how_to_rebuild(tmp_path):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path))
    client.create_collection("kb", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.close()
    with pytest.raises(StoreError, match=r"rag-ingest --recreate.*RAG_QDRANT_ENGINE=local"):
        Store.open(Settings(qdrant_path=tmp_path))
    assert not (tmp_path / "edge" / "kb").exists()


def test_a_migration_waits_for_a_running_older_app_with_the_way_out(tmp_path):
    folder = tmp_path / "qdrant"
    local_collection(folder, write_tree(tmp_path / "kb"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCAL, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreLockedError, match="in use by another process"):
            Store.open(Settings(qdrant_path=folder))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not (folder / "edge" / "kb").exists()


HOLD_LOCAL = textwrap.dedent("""
    import sys, time
    from qdrant_client import QdrantClient
    client = QdrantClient(path=sys.argv[1])
    print("holding", flush=True)
    time.sleep(60)
""")
