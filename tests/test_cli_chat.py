"""`rag-chat` over a real in-memory store and a fake chat model."""

from __future__ import annotations

import io
import json

import pytest
from fakes import FakeChatModel, FakeEmbeddings, count_words
from qdrant_client import QdrantClient

from chatbot import build, engine
from chatbot.cli import chat as cli_chat
from chatbot.rag.retrieval import Retriever
from chatbot.rag.store import Store
from ingest.pipeline import run_ingest


@pytest.fixture
def model(tmp_path, monkeypatch):
    (tmp_path / "refunds.md").write_text("# Refunds\n\nRefunds for unused labels take 5 business days.\n")
    store = Store(QdrantClient(location=":memory:"), "kb")
    run_ingest([tmp_path], store=store, load_embeddings=FakeEmbeddings, embed_model="fake", count_tokens=count_words)
    model = FakeChatModel(replies=["Refunds take 5 business days [1]."], adapters=("support",))
    chat_engine = engine.ChatEngine(Retriever(store, FakeEmbeddings()), model, abstain_threshold=0.0)
    monkeypatch.setattr(build, "build_engine", lambda settings, require_collection: chat_engine)
    return model


def test_json_answer_has_the_design_fields(model, capsys):
    assert cli_chat.main(["How long do refunds take?", "--json", "--strategy", "few-shot"]) == 0
    answer = json.loads(capsys.readouterr().out)

    assert {"answer", "sources", "strategy", "use_retrieval", "adapter", "prompt", "timings"} <= answer.keys()
    assert answer["answer"] == "Refunds take 5 business days [1]." and answer["strategy"] == "few-shot"
    assert answer["sources"][0]["source"] == "refunds.md" and answer["adapter"] is None


def test_no_retrieval_answers_without_sources(model, capsys):
    assert cli_chat.main(["How long do refunds take?", "--no-retrieval", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["sources"] == [] and answer["use_retrieval"] is False


def test_the_interactive_loop_keeps_the_conversation(model, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("How long do refunds take?\nand for that one?\n"))
    assert cli_chat.main([]) == 0

    second = [m.content for m in model.calls[1]["messages"]]
    assert "How long do refunds take?" in second and "Refunds take 5 business days [1]." in second
    assert "[1] Refunds" in capsys.readouterr().out


def test_an_unknown_adapter_is_a_one_line_error(model, capsys):
    assert cli_chat.main(["How long?", "--adapter", "nope"]) == 1
    assert capsys.readouterr().err.startswith("rag-chat: No adapter named 'nope'")


def test_a_missing_collection_says_to_ingest_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_QDRANT_PATH", str(tmp_path / "empty"))
    assert cli_chat.main(["hello"]) == 1
    assert "run `rag-ingest data/kb` first" in capsys.readouterr().err


def test_slash_commands_switch_the_adapter_and_retrieval_between_questions_of_one_process(model, capsys, monkeypatch):
    script = "Refund time?\n/adapter support\nRefund time?\n/retrieval off\n/adapter none\nRefund time?\n/oops\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert cli_chat.main(["--json"]) == 0

    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(a["adapter"], a["use_retrieval"]) for a in answers] == [(None, True), ("support", True), (None, False)]
    assert [call["adapter"] for call in model.calls] == [None, "support", None]


def test_list_adapters_reads_the_registry_without_loading_a_model(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "adapters" / "mine"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"base_model_name_or_path": "someone/Other-1B"}')
    (folder / "adapter_model.safetensors").write_bytes(b"")
    monkeypatch.setenv("RAG_ADAPTERS_DIR", str(tmp_path / "adapters"))
    monkeypatch.setattr(build, "build_engine", None)  # loading the engine would fail

    assert cli_chat.main(["--list-adapters", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert (
        "trained on someone/Other-1B, but the loaded model is HuggingFaceTB/SmolLM2-135M-Instruct"
        in rows["mine"]["problem"]
    )
