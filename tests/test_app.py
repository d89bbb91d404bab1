"""The Streamlit page, headless through AppTest, over a real local store."""

from __future__ import annotations

from pathlib import Path

from fakes import FakeEmbeddings, count_words
from streamlit.testing.v1 import AppTest

from chatbot.config import Settings
from chatbot.store import Store
from ingest.pipeline import run_ingest

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")


def test_the_page_shows_the_ingested_knowledge_base(tmp_path, monkeypatch):
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "faq.md").write_text("# FAQ\n\nAnswers.\n")
    (tmp_path / "kb" / "pricing.md").write_text("# Pricing\n\nPlans.\n")
    store = Store.open(Settings(qdrant_path=tmp_path / "qdrant"))
    run_ingest(
        [tmp_path / "kb"], store=store, load_embeddings=FakeEmbeddings, embed_model="fake", count_tokens=count_words
    )
    store.close()
    monkeypatch.setenv("RAG_QDRANT_PATH", str(tmp_path / "qdrant"))

    app = AppTest.from_file(APP).run()

    assert not app.exception
    assert {m.label: m.value for m in app.metric} == {"Documents": "2", "Chunks": "2", "Collection": "kb"}
    assert "`faq.md`" in app.expander[0].markdown[0].value


def test_a_bad_setting_is_shown_as_a_message_not_a_traceback(monkeypatch):
    monkeypatch.setenv("RAG_TOP_K", "-3")
    app = AppTest.from_file(APP).run()
    assert not app.exception
    assert app.error[0].value.startswith("RAG_TOP_K=-3 is not allowed")


def test_an_empty_store_says_how_to_fill_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_QDRANT_PATH", str(tmp_path / "qdrant"))
    app = AppTest.from_file(APP).run()
    assert "rag-ingest data/kb" in app.warning[0].value
