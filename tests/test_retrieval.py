"""Retrieval over a real Qdrant (in memory or a temp folder), filled by the real ingest pipeline with fake embeddings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fakes import FakeEmbeddings, count_words

from chatbot.cli import search as cli_search
from chatbot.core.config import Settings
from chatbot.core.errors import CollectionMissingError, InvalidOptionError
from chatbot.rag.retrieval import Hit, RetrievalMode, Retriever
from chatbot.rag.store import Store
from ingest.pipeline import fingerprint, run_ingest
from ingest.split import ChunkerSettings

HELP_CENTRE = {
    "billing.md": "# Billing\n\nInvoices are sent monthly by email.\n\n## Refunds\n\nRefunds take 5 days to reach your card.\n",
    "setup/install.md": "# Install\n\nRun the installer.\n\n## Linux\n\nUse the tarball.\n\n## Windows\n\nUse the MSI package.\n",
    "printing.md": "# Printing\n\nLabels print on thermal printers.\n\n## Sizes\n\nChoose 4x6 labels or A4 sheets.\n",
    "notes.txt": "Plain notes about the product, kept short.\n",
}
# The error code shares no word with the page that dense retrieval prefers (all of whose
# shared words are stop words), so only the keyword list can put the right page first.
ERROR_CODES = {
    "faq.md": "# What is what\n\nWhat is a label? What is a batch? What is it that is shipped?\n",
    "address-errors.md": "# Address errors\n\nCode PW-4021 appears when the carrier rejects the street address.\n",
    "carriers.md": "# Carriers\n\nWe support UPS, DHL and Royal Mail for domestic parcels.\n",
    "returns.md": "# Returns\n\nCustomers print a return label from the portal within 30 days.\n",
}
REFUNDS = "# Refund policy\n\nRefunds for unused labels are paid back to the postage wallet in two days.\n"
DUPLICATES = {
    **{f"copy-{n}.md": REFUNDS for n in range(3)},
    "card-refunds.md": "# Card refunds\n\nA subscription refund goes back to the card you paid with.\n",
    "shipping.md": "# Shipping\n\nParcels leave the warehouse every afternoon.\n",
}


def write_tree(root: Path, pages: dict[str, str]) -> Path:
    for name, content in pages.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def fill(store: Store, root: Path, embeddings: FakeEmbeddings) -> None:
    report = run_ingest(
        [root],
        store=store,
        load_embeddings=lambda: embeddings,
        embed_model="fake",
        count_tokens=count_words,
        chunker=ChunkerSettings(chunk_tokens=60, overlap_tokens=5),
    )
    assert report.failed == [] and report.chunks > 0


@pytest.fixture
def embeddings() -> FakeEmbeddings:
    return FakeEmbeddings()


@pytest.fixture
def retriever(tmp_path, store, embeddings) -> Retriever:
    fill(store, write_tree(tmp_path / "kb", HELP_CENTRE), embeddings)
    return Retriever(store, embeddings)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_a_hit_carries_its_chunk_and_both_scores(retriever, embeddings):
    hits = retriever.retrieve("refunds take 5 days", k=1, mode="dense")

    (hit,) = hits
    assert (hit.source, hit.title, hit.section) == ("billing.md", "Billing", "Refunds")
    assert hit.text == "Refunds take 5 days to reach your card."
    assert hit.page is None
    stored = {point.id: point.payload for point in retriever.store.records()}
    assert stored[hit.chunk_id]["text"] == hit.text
    # The embedded text is the heading path, then the text; dense_score is its cosine with the query.
    expected = cosine(
        embeddings.embed_query("refunds take 5 days"), embeddings.embed_query(f"Billing > Refunds\n{hit.text}")
    )
    assert hit.dense_score == pytest.approx(expected, abs=1e-5)
    assert hit.score == pytest.approx(hit.dense_score, abs=1e-5)  # in dense mode the score is that cosine


def test_hybrid_hits_report_the_dense_cosine_not_the_fused_score(retriever):
    dense = {hit.chunk_id: hit.dense_score for hit in retriever.retrieve("refunds card", k=4, mode="dense")}
    hybrid = retriever.retrieve("refunds card", k=4, mode="hybrid")

    assert all(
        hit.dense_score == pytest.approx(dense[hit.chunk_id], abs=1e-5) for hit in hybrid if hit.chunk_id in dense
    )
    assert any(hit.score != pytest.approx(hit.dense_score, abs=1e-3) for hit in hybrid)  # RRF is another scale


@pytest.mark.parametrize("mode", list(RetrievalMode))
def test_hits_come_best_first_and_k_of_them(retriever, mode):
    for k in (1, 3, 6):
        hits = retriever.retrieve("labels on thermal printers", k=k, mode=mode)
        assert len(hits) == k
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
        assert len({hit.chunk_id for hit in hits}) == k
    assert len(retriever.retrieve("labels")) == retriever.top_k == 4


def test_hybrid_puts_the_exact_error_code_first_where_dense_does_not(tmp_path, store, embeddings):
    fill(store, write_tree(tmp_path / "kb", ERROR_CODES), embeddings)
    retriever = Retriever(store, embeddings)

    dense = retriever.retrieve("what is PW-4021", k=4, mode=RetrievalMode.DENSE)
    hybrid = retriever.retrieve("what is PW-4021", k=4, mode=RetrievalMode.HYBRID)

    assert dense[0].source == "faq.md"  # the bag-of-words embedding likes "what is ... what is"
    assert hybrid[0].source == "address-errors.md"
    assert "PW-4021" in hybrid[0].text


def test_filters_by_source_and_by_section(retriever):
    by_source = retriever.retrieve("use the installer", k=10, sources=["setup/install.md"])
    assert {hit.source for hit in by_source} == {"setup/install.md"} and len(by_source) == 3

    either = retriever.retrieve("labels", k=10, sources=["billing.md", "printing.md"], mode="dense")
    assert {hit.source for hit in either} == {"billing.md", "printing.md"}

    by_section = retriever.retrieve("use the installer", k=10, sections=["Windows", "Refunds"])
    assert {(hit.source, hit.section) for hit in by_section} == {
        ("setup/install.md", "Windows"),
        ("billing.md", "Refunds"),
    }

    both = retriever.retrieve("anything", k=10, sources=["billing.md"], sections=["Windows"])
    assert both == []  # a filter that excludes everything is an empty answer, not a missing collection


def test_score_threshold_drops_hits_below_that_cosine(retriever):
    hits = retriever.retrieve("labels print on thermal printers", k=6, mode="hybrid")
    cut = sorted(hit.dense_score for hit in hits)[3]

    kept = retriever.retrieve("labels print on thermal printers", k=6, mode="hybrid", score_threshold=cut)

    assert kept and len(kept) < len(hits)
    assert {hit.chunk_id for hit in kept} == {hit.chunk_id for hit in hits if hit.dense_score >= cut}
    strict = Retriever(retriever.store, retriever.embeddings, score_threshold=1.01)
    assert strict.retrieve("labels") == []


@pytest.mark.parametrize("mode", list(RetrievalMode))
def test_mmr_trades_a_near_duplicate_for_a_different_relevant_chunk(tmp_path, store, embeddings, mode):
    fill(store, write_tree(tmp_path / "kb", DUPLICATES), embeddings)
    retriever = Retriever(store, embeddings, mode=mode)

    plain = retriever.retrieve("refund of unused labels to the wallet", k=3, mmr=False)
    diverse = retriever.retrieve("refund of unused labels to the wallet", k=3, mmr=True)

    assert [hit.source.startswith("copy-") for hit in plain] == [True, True, True]
    assert diverse[0].source.startswith("copy-")
    assert sum(hit.source.startswith("copy-") for hit in diverse) == 1


def test_a_missing_or_empty_collection_says_to_run_rag_ingest(store, embeddings):
    retriever = Retriever(store, embeddings)
    message = r"Collection 'kb' is empty or missing: run `rag-ingest data/kb` first \(or set RAG_COLLECTION\)\."
    for mode in RetrievalMode:
        with pytest.raises(CollectionMissingError, match=message):
            retriever.retrieve("refunds", mode=mode)

    store.create(fingerprint("fake", 16, ChunkerSettings()))
    with pytest.raises(CollectionMissingError, match=message):
        retriever.retrieve("refunds")


def test_an_unknown_mode_names_the_value_and_the_choices(retriever):
    with pytest.raises(InvalidOptionError, match=r"Unknown retrieval mode 'bm25': choose one of dense, hybrid"):
        retriever.retrieve("refunds", mode="bm25")
    with pytest.raises(InvalidOptionError, match=r"Unknown retrieval mode 'sparse': choose one of dense, hybrid"):
        Retriever(retriever.store, retriever.embeddings, mode="sparse")
    with pytest.raises(InvalidOptionError, match="k=0"):
        retriever.retrieve("refunds", k=0)


def test_to_json_is_the_design_hit_plus_dense_score_and_page():
    hit = Hit("a.md", "A", "B", 0.5, "id-1", "text", dense_score=0.7)
    assert hit.to_json() == {
        "source": "a.md",
        "title": "A",
        "section": "B",
        "score": 0.5,
        "chunk_id": "id-1",
        "text": "text",
        "dense_score": 0.7,
    }
    assert Hit("a.pdf", "A", "", 0.5, "id-2", "t", dense_score=0.1, page=3).to_json()["page"] == 3


@pytest.fixture
def ingested_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "qdrant"
    store = Store.open(Settings(qdrant_path=folder))
    fill(store, write_tree(tmp_path / "kb", HELP_CENTRE), FakeEmbeddings())
    store.close()
    for name in ("RAG_COLLECTION", "RAG_QDRANT_URL", "RAG_TOP_K"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAG_QDRANT_PATH", str(folder))
    monkeypatch.setenv("RAG_EMBED_MODEL", "fake")  # the model `fill` records in the collection
    monkeypatch.setattr(cli_search, "load_embeddings", lambda settings: FakeEmbeddings())
    return folder


def test_rag_search_json_prints_query_mode_and_hits(ingested_folder, capsys):
    assert cli_search.main(["refunds to my card", "--k", "2", "--json"]) == 0

    shown = json.loads(capsys.readouterr().out)
    assert shown["query"] == "refunds to my card" and shown["mode"] == "hybrid"
    assert len(shown["hits"]) == 2
    keys = {"source", "title", "section", "score", "chunk_id", "text", "dense_score"}
    assert all(set(hit) == keys for hit in shown["hits"])
    assert shown["hits"][0]["source"] == "billing.md"


def test_rag_search_lists_hits_and_honours_mode_and_source(ingested_folder, capsys):
    assert cli_search.main(["use the installer", "--mode", "dense", "--source", "setup/install.md"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("1. [") and "setup/install.md > " in out
    assert "billing.md" not in out and len(out.strip().splitlines()) == 6  # 3 hits, 2 lines each


def test_rag_search_errors_are_one_line_and_an_exit_code(ingested_folder, capsys, monkeypatch):
    monkeypatch.setenv("RAG_COLLECTION", "other")
    assert cli_search.main(["refunds"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rag-search: Collection 'other' is empty or missing") and "Traceback" not in err

    monkeypatch.setenv("RAG_COLLECTION", "kb")
    monkeypatch.setenv("RAG_EMBED_MODEL", "acme/other-embedder")  # same dimension, another model's space
    assert cli_search.main(["refunds"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rag-search: Collection 'kb' was built with fake (16-d)") and "acme/other-embedder" in err

    monkeypatch.setenv("RAG_TOP_K", "zero")
    assert cli_search.main(["refunds"]) == 2
    assert "RAG_TOP_K=zero" in capsys.readouterr().err
    assert cli_search.main(["refunds", "--k", "0"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        cli_search.main(["refunds", "--mode", "sparse"])
    assert exit_info.value.code == 2
