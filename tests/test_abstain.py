"""Abstention calibrated per collection: set at ingest from the collection's headings, stored with it, used and shown."""

from __future__ import annotations

import json

import pytest
from fakes import FakeChatModel, FakeEmbeddings, count_words
from qdrant_client import QdrantClient
from test_retrieval import HELP_CENTRE, write_tree

from chatbot.cli import search as cli_search
from chatbot.core.config import Settings
from chatbot.engine import ABSTAIN_THRESHOLD, ChatEngine
from chatbot.rag import abstain
from chatbot.rag.retrieval import Retriever
from chatbot.rag.store import Store
from ingest.pipeline import run_ingest
from ingest.split import ChunkerSettings


def ingest(store: Store, root, embeddings=None):
    return run_ingest(
        [root],
        store=store,
        load_embeddings=lambda: embeddings or FakeEmbeddings(),
        embed_model="fake",
        count_tokens=count_words,
        chunker=ChunkerSettings(chunk_tokens=60, overlap_tokens=5),
    )


@pytest.fixture
def store():
    store = Store(QdrantClient(location=":memory:"), "kb")
    yield store
    store.close()


def test_heading_questions_are_distinct_heading_paths_sampled_evenly():
    headings = [("Billing", ""), ("Billing", "Refunds"), ("Billing", "Refunds"), ("", "")]
    assert abstain.heading_questions(headings) == ["Billing", "Billing > Refunds"]
    many = [("Page", f"Section {n:03d}") for n in range(500)]
    sampled = abstain.heading_questions(many, limit=5)
    assert sampled == [f"Page > Section {n:03d}" for n in (0, 125, 250, 374, 499)]


def test_the_cut_sits_alpha_of_the_way_from_off_topic_to_heading_questions(tmp_path, store):
    embeddings = FakeEmbeddings(dim=256)  # wide enough that unrelated words rarely share a dimension
    ingest(store, write_tree(tmp_path / "kb", HELP_CENTRE), embeddings)
    headings = [("Billing", "Refunds"), ("Install", "Linux"), ("Printing", "Sizes")]

    low = abstain.calibrate(store, embeddings, headings, alpha=0.0)
    high = abstain.calibrate(store, embeddings, headings, alpha=1.0)
    half = abstain.calibrate(store, embeddings, headings, alpha=0.5)

    assert low.threshold == pytest.approx(low.off_topic) and high.threshold == pytest.approx(high.headings)
    assert low.off_topic < half.threshold < high.headings  # the collection's headings match it; off-topic does not
    assert half.threshold == pytest.approx((half.off_topic + half.headings) / 2) and half.questions == 3
    assert abstain.calibrate(store, embeddings, []) is None


def test_ingest_stores_the_cut_and_recomputes_it_when_the_collection_changes(tmp_path, store):
    root = write_tree(tmp_path / "kb", HELP_CENTRE)
    assert abstain.threshold(store) == (abstain.DEFAULT_THRESHOLD, False)  # nothing ingested: the constant

    ingest(store, root)
    first = store.metadata_value(abstain.ABSTAIN_KEY)
    assert first["questions"] >= len(HELP_CENTRE) and abstain.threshold(store) == (first["threshold"], True)

    (root / "printing.md").unlink()  # only a removal: the cut still follows the collection
    (root / "billing.md").unlink()
    ingest(store, root)
    second = store.metadata_value(abstain.ABSTAIN_KEY)
    assert second["questions"] < first["questions"] and second != first

    embeddings = FakeEmbeddings()
    ingest(store, root, embeddings)  # nothing changed: nothing embedded, the cut kept
    assert embeddings.calls == [] and store.metadata_value(abstain.ABSTAIN_KEY) == second


def test_a_collection_without_a_cut_gets_one_on_the_next_run(tmp_path, store):
    root = write_tree(tmp_path / "kb", HELP_CENTRE)
    ingest(store, root)
    store.set_metadata_value(abstain.ABSTAIN_KEY, None)  # made before calibration, or a run killed before it

    ingest(store, root)

    assert abstain.threshold(store)[1]


def test_the_engine_abstains_under_the_collections_cut_unless_given_one(tmp_path, store):
    ingest(store, write_tree(tmp_path / "kb", HELP_CENTRE))
    engine = ChatEngine(Retriever(store, FakeEmbeddings()), FakeChatModel())
    assert engine.abstain_threshold == store.metadata_value(abstain.ABSTAIN_KEY)["threshold"]

    store.set_metadata_value(abstain.ABSTAIN_KEY, {"threshold": 1.01})  # say a re-ingest moved it: read afresh
    assert engine.answer("Refunds take 5 days to reach your card?").abstained
    store.set_metadata_value(abstain.ABSTAIN_KEY, None)
    assert engine.abstain_threshold == ABSTAIN_THRESHOLD  # no cut of its own: the constant
    engine.abstain_threshold = 0.0  # given: it wins
    assert not engine.answer("Refunds take 5 days to reach your card?").abstained


def test_rag_search_json_shows_the_cut_the_chatbot_abstains_under(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "qdrant"
    store = Store.open(Settings(qdrant_path=folder))
    ingest(store, write_tree(tmp_path / "kb", HELP_CENTRE))
    cut = store.metadata_value(abstain.ABSTAIN_KEY)["threshold"]
    store.close()
    for name in ("RAG_COLLECTION", "RAG_QDRANT_URL", "RAG_TOP_K"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAG_QDRANT_PATH", str(folder))
    monkeypatch.setenv("RAG_EMBED_MODEL", "fake")
    monkeypatch.setattr(cli_search, "load_embeddings", lambda settings: FakeEmbeddings())

    assert cli_search.main(["refunds", "--json"]) == 0

    shown = json.loads(capsys.readouterr().out)
    assert shown["abstain_threshold"] == cut and shown["abstain_calibrated"] is True
