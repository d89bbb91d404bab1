"""The typed options one answer is asked with, and the one chat-model interface every runtime shares."""

import inspect

import pytest
from fakes import FakeChatModel
from langchain_core.messages import HumanMessage

from chatbot.core.errors import InvalidOptionError, RagtuneError
from chatbot.engine import ChatEngine
from chatbot.llm.base import ChatModel
from chatbot.options import AnswerOptions, grid
from chatbot.rag.prompts import Strategy
from chatbot.rag.retrieval import RetrievalMode


def test_options_take_names_and_keep_enums():
    options = AnswerOptions(strategy="cot", mode="dense", top_k=3)
    assert options.strategy is Strategy.COT and options.mode is RetrievalMode.DENSE
    assert options == AnswerOptions(strategy=Strategy.COT, mode=RetrievalMode.DENSE, top_k=3)
    assert AnswerOptions.from_json(options.to_json()) == options
    assert options.to_json()["label"] == "retrieval on (dense, top 3) · base model · Chain of thought"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"strategy": "tree-of-thought"}, "Unknown prompt strategy 'tree-of-thought'"),
        ({"mode": "sparse"}, "Unknown retrieval mode 'sparse'"),
        ({"top_k": 0}, "top_k=0 is not allowed"),
        ({"top_k": True}, "top_k=True is not allowed"),
        ({"top_k": 2.5}, "top_k=2.5 is not allowed"),
        ({"top_k": "3"}, "top_k='3' is not allowed"),
    ],
)
def test_a_bad_option_names_the_value_and_the_choices(given, message):
    with pytest.raises(InvalidOptionError, match=message):
        AnswerOptions(**given)


def test_labels_name_the_served_model_apart_from_the_local_one():
    assert AnswerOptions(served=True).label == "retrieval on · served model · Zero-shot"
    assert AnswerOptions(False, "lora", served=True).label == "retrieval off · served adapter lora · Zero-shot"


def test_the_engine_takes_exactly_the_options_fields_as_keyword_only_arguments():
    fields = list(AnswerOptions.__dataclass_fields__)
    for method in (ChatEngine.answer, ChatEngine.stream):
        parameters = inspect.signature(method).parameters.values()
        keyword_only = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
        assert keyword_only == fields
        defaults = {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert AnswerOptions(**defaults) == AnswerOptions()


def test_grid_lays_out_strategy_then_adapter_then_retrieval():
    cells = grid(use_retrieval=(False, True), adapters=(None, "a"), strategies=("zero-shot", "cot"))
    assert [(c.strategy.value, c.adapter, c.use_retrieval) for c in cells[:4]] == [
        ("zero-shot", None, False),
        ("zero-shot", None, True),
        ("zero-shot", "a", False),
        ("zero-shot", "a", True),
    ]
    assert len(cells) == 8 and len(set(cells)) == 8
    assert grid(AnswerOptions(top_k=2), served_adapters=["a"]) == [
        AnswerOptions(top_k=2),
        AnswerOptions(adapter="a", served=True, top_k=2),
    ]


def test_a_chat_model_must_say_how_it_renders_and_counts():
    class Incomplete(ChatModel):
        @property
        def _llm_type(self) -> str:
            return "incomplete"

        def _stream(self, messages, stop=None, run_manager=None, **kwargs):
            yield from ()

    with pytest.raises(TypeError, match="render"):
        Incomplete()


def test_every_runtime_checks_its_call_options_the_same_way():
    model = FakeChatModel()
    assert model.call_options({"adapter": "a", "temperature": 0.5}).temperature == 0.5
    assert model.call_options({}).max_new_tokens == 64  # the model's own default
    with pytest.raises(InvalidOptionError, match="Unknown option 'top_p' for FakeChatModel"):
        model.call_options({"top_p": 0.9})
    with pytest.raises(InvalidOptionError, match="max_new_tokens=0 is not allowed"):
        model.call_options({"max_new_tokens": 0})
    with pytest.raises(InvalidOptionError, match="temperature=True is not allowed"):
        model.call_options({"temperature": True})


def test_a_runtime_without_logits_says_it_cannot_probe():
    model = FakeChatModel(model_name="fake")
    assert model.get_num_tokens_from_messages([HumanMessage("two words")]) == model.count_tokens(
        [HumanMessage("two words")]
    )
    with pytest.raises(RagtuneError, match="Cannot probe 'lora': FakeChatModel returns text"):
        model.answer_loss([], "x", adapter="lora")
