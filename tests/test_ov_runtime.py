"""The OpenVINO GenAI runtime on a tiny Llama exported for real: adapters per call, the first-token bias, parity.

The tiny model is the GGUF fixture's, converted as the bundled model is, with its weights redrawn (as in
test_generation.py) and saved, then exported by `ov_export` in its child process. The transformers
runtime over the same folder and the same PEFT adapters is the reference: what it says is what
PEFT means, so OpenVINO must pick the same tokens where the choice is clear.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
from gguf_fixture import tiny_model
from langchain_core.messages import HumanMessage, SystemMessage

from adapters.card import AdapterCard
from adapters.registry import Adapter, discover
from chatbot.core.config import Settings
from chatbot.core.errors import AdapterNotFoundError
from chatbot.llm import ov_export
from chatbot.llm.local import LocalChatModel

pytestmark = pytest.mark.model

QUESTION = [SystemMessage("Answer briefly."), HumanMessage("What is the capital of France?")]
OTHER = [SystemMessage("Be kind."), HumanMessage("Where do I change my email address?")]
PROMPTS = [QUESTION, OTHER] + [
    [HumanMessage(f"Question {n}: is the sky {colour}?")] for n in range(4) for colour in "red blue".split()
]


@pytest.fixture(scope="module")
def varied(tiny_folder, tmp_path_factory):
    """The tiny model with varied weights as a plain folder, and LoRA adapters 'a' and 'b' (scale 4) for it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("varied")
    model, tokenizer = tiny_model(tiny_folder)
    plain = AutoModelForCausalLM.from_pretrained(tiny_folder, local_files_only=True)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "lm_head.bias"}, strict=False)
    plain.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    for seed, name in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(root / "model", local_files_only=True)
        config = LoraConfig(
            r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
        )
        get_peft_model(base, config).save_pretrained(root / "adapters" / name)
        AdapterCard(name=name, base_model="model").write(root / "adapters" / name)
    return root


@pytest.fixture(scope="module")
def settings(varied, tmp_path_factory):
    return Settings(llm_model=str(varied / "model"), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def reference(varied):
    """The transformers runtime with both adapters on one PeftModel."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(varied / "model", local_files_only=True)
    model = PeftModel.from_pretrained(base, str(varied / "adapters" / "a"), adapter_name="a")
    model.load_adapter(str(varied / "adapters" / "b"), adapter_name="b")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(varied / "model", local_files_only=True)
    return LocalChatModel(model=model, tokenizer=tokenizer, model_name="tiny", max_new_tokens=16)


@pytest.fixture(scope="module")
def ov_chat(settings, varied, reference):
    from chatbot.llm.ov_runtime import build_openvino_chat_model

    adapters = [Adapter(name, varied / "adapters" / name, "model") for name in ("a", "b")]
    model, problems = build_openvino_chat_model(settings, adapters, {}, max_new_tokens=16, scorer=lambda: reference)
    assert problems == {}
    return model.model_copy(update={"model_name": "tiny"})


def _ids(chat, messages=QUESTION, **options):
    """The token ids `chat` generates (text alone can hide a token: a byte of a character still to come)."""
    tokens = []
    call = chat.call_options(options)
    with chat._hold(call.adapter):
        chat._produce(chat._prompt_ids(messages), call, chat._end_token_ids(), lambda t: tokens.append(t) or True)
    return tokens


def _ranked(reference, messages, adapter):
    """The transformers runtime's first-token choices under `adapter`: (token, log-probability), best first."""
    scores = reference.next_token_logprobs(messages, adapter=adapter)
    order = scores.argsort(descending=True).tolist()
    return [(t, float(scores[t])) for t in order[:3]]


def test_the_export_is_made_once_per_weights_and_kept(settings, ov_chat, varied):
    source = varied / "model"
    folder, seconds = ov_export.ensure_export(settings.cache_dir, source, "f32")

    assert seconds is None  # the fixture's build exported it already
    assert json.loads((folder / ov_export.META).read_text())["weights"] == "f32"
    assert ov_export.export_dir(settings.cache_dir, source, "int8") != folder
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no staging left behind
    assert ov_chat.identity()["runtime"] == "openvino" and ov_chat.identity()["weights"] == "f32"


def test_int8_weights_are_eight_bit_and_generate(settings, varied):
    import openvino as ov

    from chatbot.llm.ov_runtime import build_openvino_chat_model

    int8 = Settings(llm_model=settings.llm_model, cache_dir=settings.cache_dir, llm_weights="int8")
    model, _ = build_openvino_chat_model(int8, [], {}, max_new_tokens=4)
    folder = ov_export.export_dir(settings.cache_dir, varied / "model", "int8")
    kinds = {
        op.get_element_type().get_type_name()
        for op in ov.Core().read_model(folder / "openvino_model.xml").get_ops()
        if op.get_type_name() == "Constant"
    }

    assert "u8" in kinds or "i8" in kinds
    assert model.identity()["weights"] == "int8"
    assert model.invoke(QUESTION).usage_metadata["output_tokens"] == 4


def test_adapters_switch_per_call_and_the_base_model_comes_back(ov_chat):
    base, with_a, with_b = _ids(ov_chat), _ids(ov_chat, adapter="a"), _ids(ov_chat, adapter="b")

    assert len({tuple(base), tuple(with_a), tuple(with_b)}) == 3
    assert _ids(ov_chat) == base  # nothing of 'a' or 'b' stayed on
    assert ov_chat.invoke(QUESTION, adapter="a").response_metadata["adapter"] == "a"
    with pytest.raises(AdapterNotFoundError, match=r"'c'.*'a', 'b'"):
        ov_chat.invoke(QUESTION, adapter="c")


def test_each_adapters_pipeline_gives_plain_greedy_tokens_whatever_ran_before(ov_chat):
    # Each adapter's pipeline keeps a prefix cache and decodes by prompt lookup; the reference is plain greedy
    # decoding with the adapter applied per call and no cache. Running the same prompt on the base model first
    # must not hand its cached keys to the adapter (it did when one pipeline's cache served every adapter).
    from chatbot.llm.ov_runtime import _inputs

    def plain(messages, adapter):
        call = ov_chat.call_options({"adapter": adapter, "max_new_tokens": 12})
        with ov_chat._hold(adapter):
            config = ov_chat._beam_config(call, ov_chat._end_token_ids())
            return list(ov_chat._beam_pipeline().generate(_inputs(ov_chat._prompt_ids(messages)), config).tokens[0])

    for messages in PROMPTS[:4]:
        for adapter in (None, "a", "b", None, "a"):
            assert _ids(ov_chat, messages, adapter=adapter, max_new_tokens=12) == plain(messages, adapter)


@pytest.mark.parametrize("adapter", [None, "a", "b"])
@pytest.mark.parametrize("messages", [QUESTION, OTHER], ids=["question", "other"])
def test_the_first_token_is_the_one_peft_would_pick_at_peft_scale(ov_chat, reference, adapter, messages):
    (best, top), (_, second) = _ranked(reference, messages, adapter)[:2]
    if top - second < 1e-3:
        pytest.skip("a near tie: either token is right")

    assert _ids(ov_chat, messages, adapter=adapter, max_new_tokens=1) == [best]


def test_a_first_token_bias_moves_the_first_token_exactly_at_its_boundary_and_only_under_its_adapter(
    ov_chat, reference
):
    tokenizer = reference.tokenizer
    # a prompt whose first token under 'a' is a whole piece of text (the bias is keyed by text) and clearly ahead
    for messages in PROMPTS:
        (best, top), (runner_up, second) = _ranked(reference, messages, "a")[:2]
        text = tokenizer.decode([best])
        if reference.get_token_ids(text)[:1] == [best] and top - second > 0.2:
            break
    else:
        pytest.fail("no prompt has a clear first token that is a piece of text")
    margin = top - second

    def first_token(bias, adapter="a"):
        chat = ov_chat.model_copy(update={"first_token_bias": {"a": {text: bias}}})
        return _ids(chat, messages, adapter=adapter, max_new_tokens=1)[0]

    assert first_token(-(margin - 0.05)) == best  # not quite enough to lose its place
    assert first_token(-(margin + 0.05)) == runner_up  # just enough
    assert first_token(-(margin + 0.05), adapter="b") == _ranked(reference, messages, "b")[0][0]
    assert first_token(-(margin + 0.05), adapter=None) == _ranked(reference, messages, None)[0][0]
    biased = ov_chat.model_copy(update={"first_token_bias": {"a": {text: -(margin + 0.05)}}})
    assert biased.invoke(messages, adapter="a").usage_metadata["output_tokens"] == 16  # generation goes on after it


def test_stop_strings_cut_the_answer_and_usage_and_timings_are_reported(ov_chat):
    full = ov_chat.invoke(QUESTION).content
    stop = full[5:8]
    assert stop and full.index(stop) == 5

    cut = ov_chat.invoke(QUESTION, stop=[stop])
    meta = cut.response_metadata

    assert cut.content == full[:5]
    assert cut.usage_metadata["input_tokens"] == ov_chat.count_tokens(QUESTION)
    assert cut.usage_metadata["output_tokens"] < 16
    assert meta["finish_reason"] == "stop" and meta["seconds_to_first_token"] <= meta["total_seconds"]
    assert ov_chat.invoke(QUESTION).response_metadata["finish_reason"] == "length"


@pytest.mark.timeout(120)
def test_closing_a_stream_early_ends_generation_and_frees_the_pipeline(ov_chat):
    threads_before = threading.active_count()
    stream = ov_chat.stream(QUESTION, max_new_tokens=200)
    next(stream)
    stream.close()

    assert threading.active_count() == threads_before
    assert ov_chat.invoke(QUESTION, max_new_tokens=3).usage_metadata["output_tokens"] == 3


@pytest.mark.timeout(120)
def test_two_threads_take_turns_and_each_gets_its_own_answer(ov_chat):
    alone = {name: ov_chat.invoke(QUESTION, adapter=name).content for name in ("a", "b")}
    results = {}

    def ask(name):
        results[name] = ov_chat.invoke(QUESTION, adapter=name)

    threads = [threading.Thread(target=ask, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {name: answer.content for name, answer in results.items()} == alone
    assert max(answer.response_metadata["wait_seconds"] for answer in results.values()) > 0


def test_the_answer_loss_comes_from_the_transformers_runtime(ov_chat, reference):
    messages = [{"role": "user", "content": "Hi"}]
    assert ov_chat.answer_loss(messages, "Hello.", adapter="a") == reference.answer_loss(
        messages, "Hello.", adapter="a"
    )


def test_adapters_openvino_cannot_apply_are_listed_with_the_reason_and_the_rest_load(settings, varied, tmp_path):
    import shutil

    from chatbot.llm.ov_runtime import build_openvino_chat_model

    for name, change in (("dora", {"use_dora": True}), ("patterned", {"alpha_pattern": {"q_proj": 8}})):
        shutil.copytree(varied / "adapters" / "a", tmp_path / name)
        config = json.loads((tmp_path / name / "adapter_config.json").read_text())
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({**config, **change}))
    shutil.copytree(varied / "adapters" / "a", tmp_path / "raises")
    shutil.copytree(varied / "adapters" / "a", tmp_path / "broken")
    (tmp_path / "broken" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    for name in ("dora", "patterned", "raises", "broken"):
        AdapterCard(name=name, base_model="model").write(tmp_path / name)
    found = [*discover([tmp_path])]

    model, problems = build_openvino_chat_model(settings, found, {"raises": {"X": 2.0}}, max_new_tokens=4)

    assert model.adapter_names() == []
    assert "DoRA" in problems["dora"] and "different ranks or alphas" in problems["patterned"]
    assert "raises a token" in problems["raises"] and "could not be loaded" in problems["broken"]
    assert all("RAG_LLM_RUNTIME=transformers" in problems[n] for n in ("dora", "patterned", "raises"))


def test_without_the_exporter_the_engine_falls_back_to_transformers_and_says_why(varied, tmp_path, monkeypatch, caplog):
    from chatbot import build

    monkeypatch.setattr(ov_export, "EXPORT_LIBS", tmp_path / "missing")
    settings = Settings(llm_model=str(varied / "model"), cache_dir=tmp_path / "cache", adapters_dir=varied / "adapters")

    with caplog.at_level(logging.WARNING):
        model, _ = build._local_chat_model(settings)

    assert isinstance(model, LocalChatModel)
    assert "generating with transformers" in caplog.text and "make setup" in caplog.text
    assert not (tmp_path / "cache" / "openvino").exists() or not any((tmp_path / "cache" / "openvino").iterdir())


@pytest.mark.parametrize("adapter", [None, "a"])
def test_a_batch_generates_what_each_prompt_streams_alone(ov_chat, reference, adapter):
    # prompts of different lengths (the batch pads them), one stop string, and on 'a' a first-token bias
    best = _ranked(reference, OTHER, "a")[0][0]
    chat = ov_chat.model_copy(update={"first_token_bias": {"a": {reference.tokenizer.decode([best]): -0.5}}})
    prompts = [QUESTION, OTHER, *PROMPTS[2:4]]
    first = chat.invoke(prompts[0], adapter=adapter).content
    stop = [first[4:7]]  # met in the first answer (and maybe others): its generation ends there

    together = chat.stream_many(prompts, adapter=adapter, stop=stop)
    alone = [list(chat.stream(p, adapter=adapter, stop=stop)) for p in prompts]

    assert ["".join(c.content for c in s) for s in together] == ["".join(c.content for c in s) for s in alone]
    assert [s[-1].usage_metadata for s in together] == [s[-1].usage_metadata for s in alone]
    assert [s[-1].response_metadata["finish_reason"] for s in together] == [
        s[-1].response_metadata["finish_reason"] for s in alone
    ]
    assert "".join(c.content for c in together[0]) == first[: first.index(stop[0])]
