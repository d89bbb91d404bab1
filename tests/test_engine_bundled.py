"""The embedded default end to end: the sample knowledge base, the bundled models, one real answer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from chatbot.build import load_adapters
from chatbot.core.config import Settings
from chatbot.engine import ChatEngine
from chatbot.llm import loading as models
from chatbot.llm.local import build_chat_model
from chatbot.rag.retrieval import Retriever
from chatbot.rag.store import Store
from ingest.pipeline import ingest_paths

pytestmark = pytest.mark.integration
KB = Path(__file__).resolve().parents[1] / "data" / "kb"


@pytest.fixture(scope="module")
def engine(tmp_path_factory, bundled_generator):
    settings = Settings(qdrant_path=tmp_path_factory.mktemp("qdrant"))
    embeddings = models.load_embeddings(settings)
    store = Store.open(settings)
    ingest_paths([KB], settings, store=store, embeddings=embeddings)
    engine = ChatEngine(Retriever(store, embeddings), build_chat_model(bundled_generator, max_new_tokens=48))
    yield engine
    engine.close()


def test_a_sample_question_is_answered_from_the_right_page_with_a_citation(engine):
    answer = engine.answer("What's the minimum amount I can add to my postage wallet?")

    assert "plans-and-billing/postage-wallet.md" in [hit.source for hit in answer.sources]
    assert "$25" in answer.text
    cited = [n for n in range(1, len(answer.sources) + 1) if f"[{n}]" in answer.text]
    assert cited and all("$25" in answer.sources[n - 1].text for n in cited)
    assert answer.usage["output_tokens"] <= 48


def test_without_retrieval_the_model_answers_alone(engine):
    answer = engine.answer("What's the minimum amount I can add to my postage wallet?", use_retrieval=False)
    assert answer.sources == [] and answer.text and "<context>" not in answer.prompt


def test_an_unanswerable_sample_question_gets_i_dont_know(engine):
    answer = engine.answer("do you give discounts to charities or non-profits?")  # q046 in data/kb_qa.jsonl
    assert answer.abstained and answer.text.startswith("I don't know")


def test_the_shipped_adapter_loads_on_the_bundled_model_and_changes_the_answer(engine, bundled_cache, tmp_path):
    settings = Settings(cache_dir=bundled_cache[0].cache_dir, adapters_dir=tmp_path)  # the shipped adapters only
    local = models.load_generator(settings)  # its own copy: attaching adapters changes the model it is given
    model, adapters = load_adapters(settings, local)
    tuned = ChatEngine(
        engine.retriever, build_chat_model(replace(local, model=model), max_new_tokens=48), adapters=adapters
    )
    question = "How do I void a label I printed by mistake?"

    base, adapted = tuned.answer(question), tuned.answer(question, adapter="support-rag")

    assert [(info.name, info.loaded) for info in adapters] == [("support-rag", True)]
    assert adapted.text != base.text and adapted.adapter == "support-rag"
    probe = tuned.probe("support-rag")
    assert probe["applied"] and probe["adapter_loss"] < probe["base_loss"]


def test_openvino_gives_the_transformers_runtimes_greedy_text_with_the_shipped_adapter_and_without(
    engine, bundled_cache, tmp_path
):
    from chatbot.build import _local_chat_model
    from chatbot.llm.local import LocalChatModel
    from chatbot.llm.ov_runtime import OpenVinoChatModel

    settings = Settings(cache_dir=bundled_cache[0].cache_dir, adapters_dir=tmp_path)  # the shipped adapters only
    runtimes = {name: _local_chat_model(replace(settings, llm_runtime=name)) for name in ("openvino", "transformers")}
    assert isinstance(runtimes["openvino"][0], OpenVinoChatModel)
    assert isinstance(runtimes["transformers"][0], LocalChatModel)
    assert [(i.name, i.loaded) for i in runtimes["openvino"][1]] == [("support-rag", True)]
    engines = {
        name: ChatEngine(engine.retriever, model, adapters=adapters) for name, (model, adapters) in runtimes.items()
    }
    # an answerable question and one the adapter's calibrated first-token bias decides (q046 is abstained on
    # before generating, so this one goes to the model: its refusal must hold on both runtimes)
    questions = ["How do I void a label I printed by mistake?", "Can I pay for postage with PayPal?"]

    for adapter in ("support-rag", None):
        answers = {
            name: [e.answer(q, adapter=adapter, abstain=False).text for q in questions] for name, e in engines.items()
        }
        assert answers["openvino"] == answers["transformers"]
        assert all(answers["openvino"])
    # what the probe measures comes from the transformers runtime's logits, on OpenVINO too
    assert engines["openvino"].probe("support-rag")["applied"]
