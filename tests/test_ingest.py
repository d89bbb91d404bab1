"""Ingestion pipeline on a real Qdrant (in memory or a temp folder) with fake embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeEmbeddings, count_words
from qdrant_client import QdrantClient

from chatbot.core.config import Settings
from chatbot.core.errors import FingerprintMismatchError, StoreLockedError
from chatbot.rag.store import Store, open_client
from ingest import pipeline
from ingest.pipeline import run_ingest
from ingest.split import ChunkerSettings

PAGES = {
    "billing.md": "---\ntitle: Billing\n---\n# Billing\n\nInvoices are sent monthly.\n\n## Refunds\n\nRefunds take 5 days.\n",
    "setup/install.md": "# Install\n\nRun the installer.\n\n## Linux\n\nUse the tarball.\n\n## Windows\n\nUse the MSI.\n",
    "notes.txt": "Plain notes about the product, kept short.\n",
}
CHUNKER = ChunkerSettings(chunk_tokens=40, overlap_tokens=5)


def write_tree(root: Path, pages: dict[str, str | bytes]) -> Path:
    for name, content in pages.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def ingest(root: Path, store: Store, embeddings: FakeEmbeddings | None = None, **options):
    embeddings = embeddings or FakeEmbeddings()
    options.setdefault("embed_model", "fake-words")
    return run_ingest(
        [root],
        store=store,
        load_embeddings=lambda: embeddings,
        count_tokens=count_words,
        chunker=CHUNKER,
        **options,
    )


def points(store: Store) -> dict[str, dict]:
    records, _ = store.client.scroll(store.collection, limit=10_000, with_payload=True)
    return {str(record.id): record.payload for record in records}


@pytest.fixture
def store():
    store = Store(QdrantClient(location=":memory:"), "kb")
    yield store
    store.close()


def test_first_ingest_stores_every_chunk_with_its_metadata(tmp_path, store):
    report = ingest(write_tree(tmp_path / "kb", PAGES), store)

    assert sorted(report.added) == sorted(PAGES) and report.failed == []
    stored = points(store)
    assert len(stored) == report.chunks == store.count()
    sections = {(p["source"], p["section"]) for p in stored.values()}
    assert ("billing.md", "Refunds") in sections
    assert ("setup/install.md", "Windows") in sections
    assert {p["title"] for p in stored.values()} == {"Billing", "Install", "Notes"}
    assert set(store.manifest()) == set(PAGES)
    by_source = {}
    for payload in stored.values():
        by_source.setdefault(payload["source"], []).append(payload["chunk_index"])
    assert all(sorted(indexes) == list(range(len(indexes))) for indexes in by_source.values())


def test_unchanged_reingest_embeds_and_writes_nothing(tmp_path, store):
    root = write_tree(tmp_path / "kb", PAGES)
    ingest(root, store)
    before, updated = points(store), store.stats()["updated"]
    embeddings = FakeEmbeddings()

    report = ingest(root, store, embeddings)

    assert store.stats()["updated"] == updated  # not even the manifest was rewritten
    assert sorted(report.unchanged) == sorted(PAGES)
    assert report.added == report.changed == report.removed == [] and report.chunks == 0
    assert embeddings.calls == []
    assert points(store) == before


def test_editing_one_file_replaces_only_its_chunks(tmp_path, store):
    root = write_tree(tmp_path / "kb", PAGES)
    ingest(root, store)
    before = points(store)
    (root / "billing.md").write_text("---\ntitle: Billing\n---\n# Billing\n\nInvoices are sent weekly now.\n")
    embeddings = FakeEmbeddings()

    report = ingest(root, store, embeddings)

    assert report.changed == ["billing.md"] and len(report.unchanged) == 2
    assert embeddings.embedded and all(text.startswith("Billing") for text in embeddings.embedded)
    after = points(store)
    assert {k: v for k, v in before.items() if v["source"] != "billing.md"}.items() <= after.items()
    billing = [p["text"] for p in after.values() if p["source"] == "billing.md"]
    assert billing == ["Invoices are sent weekly now."]


def test_deleting_a_file_removes_its_chunks(tmp_path, store):
    root = write_tree(tmp_path / "kb", PAGES)
    ingest(root, store)
    (root / "setup/install.md").unlink()

    report = ingest(root, store)

    assert report.removed == ["setup/install.md"]
    assert {p["source"] for p in points(store).values()} == {"billing.md", "notes.txt"}
    assert "setup/install.md" not in store.manifest()


def test_ingesting_another_folder_keeps_the_first(tmp_path, store):
    ingest(write_tree(tmp_path / "kb", PAGES), store)
    report = ingest(write_tree(tmp_path / "other", {"extra.md": "# Extra\n\nMore text.\n"}), store)

    assert report.added == ["extra.md"] and report.removed == []
    assert {p["source"] for p in points(store).values()} == {*PAGES, "extra.md"}


def test_a_different_embedding_model_is_refused_until_recreate(tmp_path, store):
    root = write_tree(tmp_path / "kb", PAGES)
    ingest(root, store)

    with pytest.raises(FingerprintMismatchError, match=r"fake-words .*--recreate"):
        ingest(root, store, embed_model="another-model")
    report = ingest(root, store, embed_model="another-model", recreate=True)

    assert sorted(report.added) == sorted(PAGES)
    assert store.fingerprint()["embed_model"] == "another-model"


def test_bad_files_are_reported_and_good_files_still_land(tmp_path, store):
    bad = {
        "binary.md": b"\x89PNG\r\n\x1a\n\x00\x00\x00",
        "empty.md": b"",
        "latin1.txt": "Caf\xe9 cr\xe8me".encode("latin-1"),
        "huge.txt": "word " * 400,
        "image.png": b"\x89PNG",
        ".hidden.md": "# Hidden\n",
    }
    report = ingest(write_tree(tmp_path / "kb", {**PAGES, **bad}), store, max_file_bytes=1000)

    failed = {item["path"]: item["error"] for item in report.failed}
    assert set(failed) == {"binary.md", "empty.md", "latin1.txt", "huge.txt"}
    assert "binary" in failed["binary.md"] and "empty" in failed["empty.md"]
    assert "UTF-8" in failed["latin1.txt"] and "limit" in failed["huge.txt"]
    assert {item["path"] for item in report.skipped} == {"image.png", ".hidden.md"}
    assert sorted(report.added) == sorted(PAGES)
    assert {p["source"] for p in points(store).values()} == set(PAGES)


def test_a_file_that_turns_unreadable_keeps_its_old_chunks(tmp_path, store):
    root = write_tree(tmp_path / "kb", PAGES)
    ingest(root, store)
    (root / "notes.txt").write_bytes(b"\x00\x01\x02")

    report = ingest(root, store)

    assert [item["path"] for item in report.failed] == ["notes.txt"]
    assert "notes.txt" in {p["source"] for p in points(store).values()}


def test_dry_run_reports_the_plan_and_writes_nothing(tmp_path, store):
    root = write_tree(tmp_path / "kb", PAGES)
    report = ingest(root, store, dry_run=True)
    assert sorted(report.added) == sorted(PAGES) and report.chunks > 0
    assert not store.exists()

    ingest(root, store)
    before = points(store)
    (root / "notes.txt").unlink()
    (root / "new.md").write_text("# New\n\nFresh page.\n")
    embeddings = FakeEmbeddings()
    report = ingest(root, store, embeddings, dry_run=True)

    assert (report.added, report.removed) == (["new.md"], ["notes.txt"])
    assert embeddings.calls == [] and points(store) == before


def test_an_ingest_killed_between_batches_ends_exact_after_a_rerun(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "BATCH_SIZE", 2)
    root = write_tree(tmp_path / "kb", PAGES)
    settings = Settings(qdrant_path=tmp_path / "qdrant")
    store = Store.open(settings)
    with pytest.raises(KeyboardInterrupt):
        ingest(root, store, FakeEmbeddings(fail_on_call=3))
    partial = points(store)
    assert len(partial) > 0 and set(store.manifest()) < set(PAGES)
    store.close()

    store = Store.open(settings)  # a fresh process: the folder is all that is left
    ingest(root, store)
    expected = Store(QdrantClient(location=":memory:"), "kb")
    ingest(root, expected)

    assert points(store).keys() == points(expected).keys()
    assert store.count() == expected.count()
    assert set(store.manifest()) == set(PAGES)
    store.close()


def test_chunks_of_a_killed_run_whose_file_was_then_deleted_are_removed(tmp_path, store, monkeypatch):
    monkeypatch.setattr(pipeline, "BATCH_SIZE", 2)
    root = write_tree(tmp_path / "kb", PAGES)
    with pytest.raises(KeyboardInterrupt):
        ingest(root, store, FakeEmbeddings(fail_on_call=3))
    unlisted = sorted(set(store.stored_sources()) - set(store.manifest()))
    assert unlisted  # some file had chunks stored but was not complete
    (root / unlisted[0]).unlink()

    report = ingest(root, store)

    assert unlisted[0] in report.removed
    assert set(store.stored_sources()) == set(store.manifest()) == set(PAGES) - {unlisted[0]}


def test_a_locked_local_store_fails_at_once_with_the_way_out(tmp_path):
    settings = Settings(qdrant_path=tmp_path / "qdrant")
    holder = open_client(settings)
    try:
        with pytest.raises(StoreLockedError, match="RAG_QDRANT_URL"):
            open_client(settings)
    finally:
        holder.close()


PLAUSIBLE = Path(__file__).resolve().parents[2] / "shared" / "kb" / "plausible"


@pytest.mark.skipif(not PLAUSIBLE.is_dir(), reason="../shared/kb/plausible (third-party test data) is not present")
def test_every_page_of_a_real_help_centre_lands_with_sane_metadata(store):
    report = ingest(PLAUSIBLE, store)

    pages = sorted(p.relative_to(PLAUSIBLE).as_posix() for p in PLAUSIBLE.rglob("*.md"))
    assert report.failed == [] and sorted(report.added) == pages
    stored = points(store).values()
    assert {p["source"] for p in stored} == set(pages)
    assert all(p["title"].strip() and p["text"].strip() for p in stored)
    texts = "\n".join(p["text"] for p in stored)
    assert "@docusaurus/useBaseUrl" not in texts and "useBaseUrl(" not in texts  # MDX imports and images gone
    assert ingest(PLAUSIBLE, store).unchanged == pages
