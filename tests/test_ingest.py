"""Ingestion pipeline on a real Qdrant (in memory or a temp folder) with fake embeddings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeEmbeddings, count_words
from qdrant_client import QdrantClient

from chatbot.core.config import Settings
from chatbot.core.errors import FingerprintMismatchError, StoreLockedError
from chatbot.rag.store import FORMAT_KEY, MANIFEST_KEY, Store, open_client
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
    return {point.id: point.payload for point in store.records()}


def listed(store: Store) -> set[str]:
    """The sources the manifest lists (its keys are the files' paths)."""
    return {entry["source"] for entry in store.manifest().values()}


def test_first_ingest_stores_every_chunk_with_its_metadata(tmp_path, store):
    report = ingest(write_tree(tmp_path / "kb", PAGES), store)

    assert sorted(report.added) == sorted(PAGES) and report.failed == []
    stored = points(store)
    assert len(stored) == report.chunks == store.count()
    sections = {(p["source"], p["section"]) for p in stored.values()}
    assert ("billing.md", "Refunds") in sections
    assert ("setup/install.md", "Windows") in sections
    assert {p["title"] for p in stored.values()} == {"Billing", "Install", "Notes"}
    assert listed(store) == set(PAGES)
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
    assert "setup/install.md" not in listed(store)


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


@pytest.mark.parametrize("engine", ["edge", "local"])
def test_an_ingest_killed_between_batches_ends_exact_after_a_rerun(tmp_path, monkeypatch, engine):
    monkeypatch.setattr(pipeline, "BATCH_SIZE", 2)
    root = write_tree(tmp_path / "kb", PAGES)
    settings = Settings(qdrant_path=tmp_path / "qdrant", qdrant_engine=engine)
    store = Store.open(settings)
    with pytest.raises(KeyboardInterrupt):
        ingest(root, store, FakeEmbeddings(fail_on_call=3))
    partial = points(store)
    assert len(partial) > 0 and listed(store) < set(PAGES)
    store.close()

    store = Store.open(settings)  # a fresh process: the folder is all that is left
    ingest(root, store)
    expected = Store(QdrantClient(location=":memory:"), "kb")
    ingest(root, expected)

    assert points(store).keys() == points(expected).keys()
    assert store.count() == expected.count()
    assert listed(store) == set(PAGES)
    store.close()


def test_chunks_of_a_killed_run_whose_file_was_then_deleted_are_removed(tmp_path, store, monkeypatch):
    monkeypatch.setattr(pipeline, "BATCH_SIZE", 2)
    root = write_tree(tmp_path / "kb", PAGES)
    with pytest.raises(KeyboardInterrupt):
        ingest(root, store, FakeEmbeddings(fail_on_call=3))
    unlisted = sorted(set(store.stored_sources()) - listed(store))
    assert unlisted  # some file had chunks stored but was not complete
    (root / unlisted[0]).unlink()

    report = ingest(root, store)

    assert unlisted[0] in report.removed
    assert set(store.stored_sources()) == listed(store) == set(PAGES) - {unlisted[0]}


def test_the_same_file_name_in_two_folders_is_two_files(tmp_path, store):
    first = write_tree(tmp_path / "a", {"guide.md": "# Guide\n\nAlpha folder setup steps.\n"})
    second = write_tree(tmp_path / "b", {"guide.md": "# Guide\n\nBeta folder billing steps.\n"})
    ingest(first, store)

    report = ingest(second, store)

    assert (report.added, report.removed) == (["guide.md"], [])
    texts = {p["text"]: p["source"] for p in points(store).values()}
    assert texts == {"Alpha folder setup steps.": "guide.md", "Beta folder billing steps.": "guide.md"}
    assert set(store.manifest()) == {(first / "guide.md").as_posix(), (second / "guide.md").as_posix()}

    (first / "guide.md").write_text("# Guide\n\nAlpha folder, edited.\n")
    assert ingest(first, store).changed == ["guide.md"]
    assert sorted(p["text"] for p in points(store).values()) == ["Alpha folder, edited.", "Beta folder billing steps."]


def test_a_moved_folder_leaves_no_chunks_behind(tmp_path, store):
    root = write_tree(tmp_path / "kb", PAGES)
    ingest(root, store)
    single = write_tree(tmp_path / "home", {"notes.md": "# Notes\n\nA loose page.\n"}) / "notes.md"
    ingest(single, store)  # a file given alone: its folder is its root
    root.rename(tmp_path / "kb2")
    single.unlink()

    dry = ingest(tmp_path / "kb2", store, dry_run=True)
    report = ingest(tmp_path / "kb2", store)

    gone = sorted([(root / name).as_posix() for name in PAGES] + [single.as_posix()])
    assert dry.removed == report.removed == gone  # outside the folder given: named by their whole path
    assert sorted(report.added) == sorted(PAGES)
    assert {p["file"] for p in points(store).values()} == {(tmp_path / "kb2" / name).as_posix() for name in PAGES}
    assert listed(store) == set(PAGES) and len(store.manifest()) == len(PAGES)


def test_the_manifest_records_whether_a_root_was_given_as_a_folder(tmp_path, store):
    root = write_tree(tmp_path / "kb", PAGES)
    ingest(root / "notes.txt", store)
    assert [(e["root"], e["folder"]) for e in store.manifest().values()] == [(str(root), False)]

    ingest(root, store)
    assert {(e["root"], e["folder"]) for e in store.manifest().values()} == {(str(root), True)}


def make_old_format(store: Store) -> None:
    """Turn a collection into what rag-ingest wrote before files had their own key."""
    legacy = {
        e["source"]: {"hash": e["hash"], "root": e["root"], "chunks": e["chunks"]} for e in store.manifest().values()
    }
    store.upsert(replace(p, payload={k: v for k, v in p.payload.items() if k != "file"}) for p in store.records())
    store.engine.update_metadata({MANIFEST_KEY: legacy, FORMAT_KEY: None})


def test_a_manifest_in_the_old_format_is_read_and_upgraded(tmp_path, store):
    root = write_tree(tmp_path / "kb", PAGES)
    ingest(root, store)
    make_old_format(store)
    before = points(store)

    assert set(store.manifest()) == {(root / name).as_posix() for name in PAGES}
    assert {e["folder"] for e in store.manifest().values()} == {False, True}  # only setup/install.md proves it
    assert store.stats()["sources"] == sorted(PAGES)
    dry = ingest(root, store, dry_run=True)
    assert sorted(dry.unchanged) == sorted(PAGES) and points(store) == before

    (root / "billing.md").write_text("# Billing\n\nInvoices are sent weekly now.\n")
    other = write_tree(tmp_path / "other", {"notes.txt": "Other notes, about something else.\n"})
    report = ingest(root, store)
    ingest(other, store)

    assert report.changed == ["billing.md"] and report.removed == []
    stored = points(store).values()
    assert sorted(p["file"] for p in stored) == sorted(p["file"] for p in points(fresh_copy(root, other)).values())
    assert {e["folder"] for e in store.manifest().values()} == {True}


def fresh_copy(*roots: Path) -> Store:
    fresh = Store(QdrantClient(location=":memory:"), "kb")
    for root in roots:
        ingest(root, fresh)
    return fresh


class Watching(FakeEmbeddings):
    """Fake embeddings that note, at every call, which sources the store holds and lists."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.seen: list[tuple[set[str], set[str]]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.seen.append((set(self.store.stored_sources()), listed(self.store)))
        return super().embed_documents(texts)


def test_a_changed_file_stays_searchable_while_its_new_version_embeds(tmp_path, store):
    root = write_tree(tmp_path / "kb", PAGES)
    ingest(root, store)
    (root / "billing.md").write_text("# Billing\n\nInvoices are sent weekly now.\n")
    watching = Watching(store)

    ingest(root, store, watching)

    assert watching.seen and all("billing.md" in stored and "billing.md" in names for stored, names in watching.seen)
    billing = [p["text"] for p in points(store).values() if p["source"] == "billing.md"]
    assert billing == ["Invoices are sent weekly now."]
    assert not any(entry.get("stale") for entry in store.manifest().values())


def test_a_swap_killed_half_way_is_finished_even_if_the_file_is_put_back(tmp_path, store, monkeypatch):
    monkeypatch.setattr(pipeline, "BATCH_SIZE", 2)
    root = write_tree(tmp_path / "kb", PAGES)
    ingest(root, store)
    original = (root / "billing.md").read_text()
    long = "".join(f"## Part {n}\n\nInvoices, part {n}, say something new.\n\n" for n in range(6))
    (root / "billing.md").write_text(f"# Billing\n\n{long}")
    with pytest.raises(KeyboardInterrupt):
        ingest(root, store, FakeEmbeddings(fail_on_call=3))
    assert "billing.md" in listed(store)  # still listed (its old chunks are all there), marked stale
    billing = {p["text"] for p in points(store).values() if p["source"] == "billing.md"}
    assert "Refunds take 5 days." in billing and any("something new" in text for text in billing)  # side by side
    (root / "billing.md").write_text(original)

    report = ingest(root, store)

    assert report.changed == ["billing.md"]
    assert points(store).keys() == points(fresh_copy(root)).keys()


def several_files(count: int) -> dict[str, str]:
    """Files of one short and one long chunk each: sorting all chunks by length would interleave the files."""
    detail = " ".join(["detail"] * 25)
    return {f"doc{n:02}.md": f"# Doc {n}\n\nShort {n}.\n\n## More\n\n{detail} {n}.\n" for n in range(count)}


def test_a_rerun_after_a_kill_embeds_only_the_files_not_yet_stored(tmp_path, store, monkeypatch):
    monkeypatch.setattr(pipeline, "BATCH_SIZE", 2)
    root = write_tree(tmp_path / "kb", several_files(10))
    with pytest.raises(KeyboardInterrupt):
        ingest(root, store, FakeEmbeddings(fail_on_call=9))  # killed with 80% of the chunks stored
    embeddings = FakeEmbeddings()

    report = ingest(root, store, embeddings)

    assert len(report.added) == 2 and len(report.unchanged) == 8
    assert len(embeddings.embedded) == 4  # the last 20%: two files of two chunks
    assert points(store).keys() == points(fresh_copy(root)).keys()


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


def test_a_linked_file_given_by_name_stays_one_file_across_runs(tmp_path, store):
    target = write_tree(tmp_path / "elsewhere", {"real.md": "# Real\n\nThe linked page's text.\n"}) / "real.md"
    (tmp_path / "notes").mkdir()
    link = tmp_path / "notes" / "link.md"
    link.symlink_to(target)

    reports = [ingest(link, store) for _ in range(3)]

    assert [(r.added, r.removed, r.unchanged) for r in reports] == [
        (["link.md"], [], []),
        ([], [], ["link.md"]),
        ([], [], ["link.md"]),
    ]
    assert {p["source"] for p in points(store).values()} == {"link.md"}
