"""Adapters on the tiny Llama: registry, attach and toggle, probe, training, resume, merge, CLI."""

from __future__ import annotations

import json
import threading

import pytest
from fakes import FakeEmbeddings
from gguf_fixture import tiny_model
from qdrant_client import QdrantClient

from adapters.card import CARD_FILE, AdapterCard
from adapters.loading import attach, merge
from adapters.pairs import IGNORE, Pair, encode, load_pairs
from adapters.registry import Adapter, AdapterInfo, discover, find, read_adapter
from adapters.training import cli as cli_train
from adapters.training.calibrate import TABLE_BOUNDARIES, best_boundary, boundary_table, refused
from adapters.training.train import TrainConfig, _lr_factor, train
from chatbot.core.config import Settings
from chatbot.core.errors import AdapterNotFoundError, OutputExistsError, RagtuneError, TrainingDataError
from chatbot.engine import ChatEngine
from chatbot.llm import loading as models
from chatbot.llm.loading import LocalModel
from chatbot.llm.local import LocalChatModel
from chatbot.rag.retrieval import Retriever
from chatbot.rag.store import Store

pytestmark = pytest.mark.model

PROMPT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Refund time?"}]
PAIRS = [
    {
        "question": "How long do refunds take?",
        "answer": "Five business days [1].",
        "context": [{"title": "Refunds", "section": "Timing", "text": "Refunds take five business days."}],
    },
    {"question": "What does Growth cost?", "answer": "Growth costs $49 a month.", "context": None},
    {"messages": [*PROMPT, {"role": "assistant", "content": "Five days."}]},
    {
        "question": "Do you ship to Mars?",
        "answer": "I don't know. The help centre does not cover this.",
        "context": [{"title": "Carriers", "section": "", "text": "We ship with UPS and USPS."}],
        "strategy": "cot",
    },
]


@pytest.fixture(scope="module")
def saved(tiny_folder, tmp_path_factory):
    """Two random (non-zero) LoRA adapters for the tiny model, saved as registry folders 'a' and 'b'."""
    import torch
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("adapters")
    for seed, name in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)
        model, _ = tiny_model(tiny_folder)
        lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        lora.save_pretrained(root / name)
        AdapterCard(name=name, base_model="tiny", probe=[{"messages": PROMPT, "answer": "Five."}]).write(root / name)
    return root


def _logits(model, tokenizer, text="Hello there"):
    import torch

    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def _chat(model, tokenizer):
    return LocalChatModel(model=model, tokenizer=tokenizer, model_name="tiny", max_new_tokens=12)


def test_the_registry_lists_folders_and_cards_without_loading_a_model(saved, tmp_path):
    (tmp_path / "not-an-adapter").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
    (tmp_path / "broken" / "adapter_model.safetensors").write_bytes(b"")

    found = discover([saved, tmp_path])

    assert [adapter.name for adapter in found] == ["a", "b", "broken"]
    assert found[0].card.base_model == "tiny" and found[0].problem_with("tiny") is None
    assert "cannot be read as JSON" in found[2].problem_with("tiny")
    with pytest.raises(AdapterNotFoundError, match=r"'c' is registered.*'a', 'b'"):
        find(found[:2], "c")


def test_a_card_whose_first_token_bias_is_not_texts_to_numbers_keeps_its_adapter_off(saved, tmp_path):
    import shutil

    for name, bias in (("good", {"I don't know": -1.5}), ("words", {"I don't know": "a lot"}), ("list", [-1.5])):
        shutil.copytree(saved / "a", tmp_path / name)
        card = {"name": name, "base_model": "tiny", "first_token_bias": bias}
        (tmp_path / name / CARD_FILE).write_text(json.dumps(card))  # as a hand edit would leave it

    found = {adapter.name: adapter for adapter in discover([tmp_path])}

    assert found["good"].problem_with("tiny") is None
    for name in ("words", "list"):
        assert "first_token_bias must map texts to numbers" in found[name].problem_with("tiny")


def test_calibration_picks_the_boundary_that_best_separates_the_two_kinds_nearest_zero_among_ties():
    found = {"answerable": [-2.0, -1.0, 0.5, 1.9], "unanswerable": [None, 0.8, 1.5, 2.2]}  # None: abstained

    assert refused(found["unanswerable"], 0.0) == 1.0 and refused(found["answerable"], 0.0) == 0.5  # greedy
    assert best_boundary(found) == 0.65  # halfway between 0.5 and 0.8: all unanswerable, 1 of 4 answerable
    assert refused(found["answerable"], 0.65) == 0.25
    assert best_boundary({"answerable": [-3.0, 1.0], "unanswerable": [-2.0, 3.0]}) == 2.0  # two as good: nearer 0
    assert best_boundary({"answerable": [], "unanswerable": [None]}) == 0.0


def test_the_calibration_table_shows_each_boundary_and_marks_the_chosen_one():
    found = {"answerable": [-2.0, -1.0, 0.5, 1.9], "unanswerable": [None, 0.8, 1.5, 2.2]}
    header, rule, *rows = (
        [cell.strip() for cell in line.strip("|").split("|")] for line in boundary_table(found, 0.65).splitlines()
    )

    assert header == ["boundary", "refuses unanswerable", "false refusals"] and rule[0].startswith(":-")
    assert len(rows) == len(TABLE_BOUNDARIES) + 1
    assert ["+0.65 (chosen)", "1.00", "0.25"] in rows and ["+0.00", "1.00", "0.50"] in rows


def test_a_user_folder_adapter_replaces_a_shipped_one_of_the_same_name(saved, tmp_path):
    import shutil

    shutil.copytree(saved / "a", tmp_path / "a")
    AdapterCard(name="a", base_model="tiny", steps=7).write(tmp_path / "a")
    assert find(discover([saved, tmp_path]), "a").card.steps == 7


def test_adapters_toggle_per_call_and_none_returns_exactly_to_base(tiny_folder, saved):
    import torch

    model, tokenizer = tiny_model(tiny_folder)
    base = _logits(model, tokenizer)
    peft_model, problems = attach(model, discover([saved]), "tiny")
    chat = _chat(peft_model, tokenizer)

    answers = {name: chat.invoke("Say something", adapter=name).content for name in (None, "a", "b", None)}
    assert problems == {} and sorted(peft_model.peft_config) == ["a", "b"]
    assert not any(parameter.requires_grad for parameter in peft_model.parameters())  # inference stays frozen
    assert len({answers[None], answers["a"], answers["b"]}) == 3
    with peft_model.disable_adapter():
        assert torch.equal(_logits(peft_model, tokenizer), base)


def test_two_threads_with_different_adapters_each_get_their_own_answer(tiny_folder, saved):
    model, tokenizer = tiny_model(tiny_folder)
    chat = _chat(attach(model, discover([saved]), "tiny")[0], tokenizer)
    alone = {name: chat.invoke("Say something", adapter=name).content for name in ("a", "b")}
    together: dict[str, str] = {}

    def ask(name):
        together[name] = chat.invoke("Say something", adapter=name).content

    threads = [threading.Thread(target=ask, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone


def test_an_adapter_for_another_base_model_is_refused_and_the_others_load(tiny_folder, saved, tmp_path):
    import shutil

    shutil.copytree(saved / "a", tmp_path / "other")
    AdapterCard(name="other", base_model="HuggingFaceTB/SmolLM2-360M-Instruct").write(tmp_path / "other")
    model, _ = tiny_model(tiny_folder)

    peft_model, problems = attach(model, discover([saved, tmp_path]), "tiny")

    assert sorted(peft_model.peft_config) == ["a", "b"]
    assert "trained on HuggingFaceTB/SmolLM2-360M-Instruct, but the loaded model is tiny" in problems["other"]


def test_the_probe_says_whether_an_adapter_changes_the_model(tiny_folder, saved, tmp_path):
    from peft import LoraConfig, get_peft_model

    zero, _ = tiny_model(tiny_folder)  # a fresh LoRA's B matrix is zero: attached, but no effect
    get_peft_model(zero, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path / "zero")
    AdapterCard(name="zero", base_model="tiny").write(tmp_path / "zero")
    model, tokenizer = tiny_model(tiny_folder)
    peft_model, _ = attach(model, discover([saved, tmp_path]), "tiny")
    infos = [AdapterInfo(a.name, a.card, str(a.path)) for a in discover([saved, tmp_path])]
    store = Store(QdrantClient(location=":memory:"), "kb")
    engine = ChatEngine(Retriever(store, FakeEmbeddings()), _chat(peft_model, tokenizer), adapters=infos)

    applied, unchanged = engine.probe("a"), engine.probe("zero")

    assert applied["applied"] and applied["delta"] != 0 and applied["pairs"] == 1
    assert not unchanged["applied"] and unchanged["delta"] == 0
    with pytest.raises(AdapterNotFoundError, match="'c'"):
        engine.probe("c")


def test_pairs_render_with_the_engine_prompt_and_the_loss_covers_only_the_answer(tiny_folder, tmp_path):
    _, tokenizer = tiny_model(tiny_folder)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS))

    pairs = load_pairs(path)
    ids, labels = encode(pairs[0], tokenizer)

    assert "Refunds take five business days." in pairs[0].messages[-1]["content"]  # the numbered RAG prompt
    assert "<context>" not in pairs[1].messages[-1]["content"]  # no context: the plain prompt
    assert "Think before answering" in pairs[3].messages[0]["content"]  # the CoT rules
    answer = [token for token in labels if token != IGNORE]
    assert tokenizer.decode(answer).startswith("Five business days [1].<|im_end|>")
    assert labels[: len(ids) - len(answer)] == [IGNORE] * (len(ids) - len(answer))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "q"}', "line 2: 'answer'"),
        ("not json", "line 2: Expecting value"),
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]}', "line 2: the last"),
        ('{"question": "q", "answer": "a", "context": "text"}', 'line 2: "context" must be a list'),
    ],
)
def test_a_bad_pairs_line_is_named_with_its_number(tmp_path, line, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIRS[1]) + "\n" + line + "\n")
    with pytest.raises(TrainingDataError, match=message):
        load_pairs(path)


def _train(tiny_folder, target, pairs, *, resume=False, **config):
    model, tokenizer = tiny_model(tiny_folder)
    defaults = dict(rank=4, steps=6, learning_rate=5e-3, eval_fraction=0.25, warmup_steps=0, checkpoint_every=3)
    local = LocalModel("tiny", tiny_folder, model, tokenizer)
    return train(local, pairs, TrainConfig(**{**defaults, **config}), target, resume=resume, progress=False)


def test_training_lowers_the_loss_and_writes_a_loadable_adapter_with_its_card(tiny_folder, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS))

    card = _train(tiny_folder, tmp_path / "out" / "demo", load_pairs(path) * 2, steps=12)

    curve = [loss for _, loss in card.extra["loss_curve"]]
    assert curve[-1] < curve[0]
    assert card.held_out["adapter_loss"] < card.held_out["base_loss"]
    assert card.base_model == "tiny" and card.steps == 12 and len(card.probe) == 2
    adapter = read_adapter(tmp_path / "out" / "demo")
    assert adapter.card == card
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo"]  # no staging or checkpoint left
    model, _ = tiny_model(tiny_folder)
    assert attach(model, [adapter], "tiny")[1] == {}


def test_an_interrupted_training_resumes_to_the_same_adapter(tiny_folder, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from adapters.training import train as train_module

    pairs = [Pair(PROMPT, f"Answer number {i}.", i) for i in range(8)]
    _train(tiny_folder, tmp_path / "straight" / "x", pairs)

    def interrupted(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "_publish", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _train(tiny_folder, tmp_path / "resumed" / "x", pairs)
    assert json.loads((tmp_path / "resumed" / ".x.training" / "checkpoint" / "state.json").read_text())["step"] == 3
    _train(tiny_folder, tmp_path / "resumed" / "x", pairs, resume=True)

    straight = load_file(tmp_path / "straight" / "x" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "x" / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(straight[key].allclose(resumed[key], atol=1e-6) for key in straight)


class _RunsCode:
    """Unpickles by calling Path.touch: what a swapped checkpoint file could make a full unpickle run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_resuming_loads_the_checkpoint_as_tensors_and_plain_values_only(tiny_folder, tmp_path, monkeypatch):
    import torch

    from adapters.training import train as train_module

    pairs = [Pair(PROMPT, f"Answer number {i}.", i) for i in range(8)]

    def interrupted(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "_publish", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _train(tiny_folder, tmp_path / "x", pairs)
    checkpoint = tmp_path / ".x.training" / "checkpoint"
    assert torch.load(checkpoint / "optimizer.pt", weights_only=True)["optimizer"]["state"]  # saved loadable so
    marker = tmp_path / "code-ran"
    torch.save({"torch": torch.get_rng_state(), "python": _RunsCode(marker)}, checkpoint / "rng.pt")

    with pytest.raises(RagtuneError, match=r"rng.pt holds more than tensors and plain values.*without --resume"):
        _train(tiny_folder, tmp_path / "x", pairs, resume=True)
    assert not marker.exists()


def test_merging_gives_the_unmerged_adapters_logits(tiny_folder, saved, tmp_path):
    model, tokenizer = tiny_model(tiny_folder)
    peft_model, _ = attach(model, [read_adapter(saved / "a")], "tiny")
    unmerged = _logits(peft_model, tokenizer)
    fresh, _ = tiny_model(tiny_folder)

    merge(fresh, tokenizer, read_adapter(saved / "a"), tmp_path / "merged")

    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    merged.lm_head = fresh.lm_head  # the test model's biased head is not a Llama config option
    assert _logits(merged, tokenizer).allclose(unmerged, atol=1e-4)
    with pytest.raises(OutputExistsError, match="not empty"):
        merge(fresh, tokenizer, read_adapter(saved / "a"), tmp_path / "merged")


def test_the_cli_rejects_a_bad_file_before_loading_the_model(tmp_path, monkeypatch, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIRS[0]) + "\n{broken\n")

    def no_model(settings):
        raise AssertionError("the model must not load for a bad file")

    monkeypatch.setattr(models, "load_generator", no_model)
    monkeypatch.setenv("RAG_ADAPTERS_DIR", str(tmp_path / "adapters"))

    assert cli_train.main([str(path), "--name", "demo"]) == 1
    assert "line 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_train.main([str(path), "--name", "../escape"])
    assert not (tmp_path / "adapters").exists()


def test_settings_default_adapter_dirs_hold_the_shipped_and_the_user_folder(tmp_path):
    from adapters.registry import SHIPPED_DIR, adapter_dirs

    assert adapter_dirs(Settings(adapters_dir=tmp_path)) == [SHIPPED_DIR, tmp_path.resolve()]
    assert isinstance(Adapter("x", tmp_path, "tiny").problem_with("tiny"), type(None))


def test_the_learning_rate_warms_up_from_the_first_step_then_decays_on_a_cosine():
    # The schedule the shipped adapter was trained with: `make adapter` must rebuild it.
    config = TrainConfig(steps=300, warmup_steps=10)
    factors = [_lr_factor(step, config) for step in range(config.steps)]

    assert factors[:2] == [1 / 11, 2 / 11] and factors[9] == 10 / 11  # never a step at learning rate 0
    assert factors[10] == 1.0 and factors[155] == pytest.approx(0.5) and factors[-1] == pytest.approx(0, abs=1e-3)
