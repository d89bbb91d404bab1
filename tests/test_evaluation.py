"""rag-eval: worked metric examples, question-set checks, the grid, the cache and the CLI, over a real in-memory Qdrant."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import FakeChatModel, FakeEmbeddings, count_words
from qdrant_client import QdrantClient

from adapters.card import AdapterCard
from adapters.registry import AdapterInfo
from chatbot import build
from chatbot.cli import evaluate as cli_eval
from chatbot.core.errors import AdapterNotFoundError, QuestionSetError
from chatbot.engine import ChatEngine
from chatbot.eval.metrics import METRICS, groundedness, own_citations, percentile, retrieval_scores, term_recall
from chatbot.eval.questions import Question
from chatbot.eval.report import Report, Result
from chatbot.eval.run import ResultCache, default_configs, load_questions, run_evaluation, write_report
from chatbot.llm.loading import weights_identity
from chatbot.options import AnswerOptions
from chatbot.rag.postprocess import is_refusal
from chatbot.rag.retrieval import Retriever
from chatbot.rag.store import Store
from ingest.pipeline import run_ingest

PAGES = {
    "refunds.md": "# Refunds\n\nRefunds for unused labels take 5 business days to reach your postage wallet.\n",
    "plans.md": "# Plans\n\nThe Growth plan costs $49 per month and includes 1,000 labels.\n",
    "printing.md": "# Printing\n\nPrint labels on 4x6 thermal paper from Settings > Printing.\n",
}
QUESTIONS = [
    {"id": "q1", "question": "How long do refunds take?", "answer": "5 business days.",
     "must_include": ["5 business days"], "source": "refunds.md", "kind": "fact"},
    {"id": "q2", "question": "How much is the Growth plan?", "answer": "$49 a month.",
     "must_include": ["$49"], "source": ["plans.md", "refunds.md"], "kind": "multi-hop"},
    {"id": "q3", "question": "Who is the CEO?", "answer": "The help centre does not say.",
     "must_include": [], "source": None, "kind": "unanswerable"},
]  # fmt: skip


def ingest(folder, store):
    run_ingest([folder], store=store, load_embeddings=FakeEmbeddings, embed_model="fake", count_tokens=count_words)


def open_store(folder):
    store = Store(QdrantClient(location=":memory:"), "kb")
    ingest(folder, store)
    return store


@pytest.fixture
def kb(tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    for name, text in PAGES.items():
        (folder / name).write_text(text)
    store = open_store(folder)
    yield folder, store
    store.close()


class DemoEngine(ChatEngine):
    """An engine that reports one loaded adapter, as the adapter registry will."""

    def adapters(self):
        return [AdapterInfo(name="demo", card=AdapterCard(created="2025-01-01T00:00:00"))]


def make_engine(store, model=None, **options):
    model = model or FakeChatModel(adapters=("demo",))
    return DemoEngine(Retriever(store, FakeEmbeddings(), top_k=3), model, abstain_threshold=0.0, **options)


def write_set(path, items):
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


# -- metrics on worked examples ---------------------------------------------------------------


def test_per_answer_measures_on_worked_examples():
    assert term_recall("Growth costs $49 a Month.", ["$49", "month", "annual"]) == pytest.approx(2 / 3)
    assert term_recall("anything", []) is None
    passage = "Refunds for unused labels take 5 business days."
    assert groundedness("Refunds take 5 business days [1].", [passage]) == 1.0
    assert groundedness("Refunds take 7 days by pigeon [1].", [passage]) == pytest.approx(3 / 5)
    assert groundedness("Refunds take 5 days.", []) is None
    assert own_citations("Refunds take 5 days [7]. [1]", [1]) == [7]
    assert own_citations("See [2] and [1].", []) == [2, 1]


def test_retrieval_scores_count_any_listed_source_and_all_of_them_separately():
    assert retrieval_scores(["a.md", "b.md", "c.md"], ["b.md"]) == {"hit@1": 0, "hit@5": 1, "mrr": 0.5, "all@5": 1}
    multi = retrieval_scores(["x", "y", "c.md", "z", "w", "f.md"], ["f.md", "c.md"])
    assert multi == {"hit@1": 0, "hit@5": 1, "mrr": pytest.approx(1 / 3), "all@5": 0}  # f.md is 6th
    assert retrieval_scores(["x"] * 5 + ["a.md"], ["a.md"])["mrr"] == 0.0


def test_percentiles_interpolate_between_ranks():
    assert percentile([4, 1, 3, 2], 0.5) == 2.5
    assert percentile([1, 2, 3, 4], 0.95) == pytest.approx(3.85)
    assert percentile([], 0.5) is None
    assert percentile([2.5], 0.95) == 2.5  # one answer: every percentile is its time
    assert (percentile([3, 1, 2], 0.0), percentile([3, 1, 2], 1.0)) == (1, 3)  # the ends are the extremes


@pytest.mark.parametrize(
    "text",
    [
        "I don't know. The help centre does not seem to cover this.",
        "The context doesn't mention discounts for charities.",
        "An Android app is not mentioned in the help centre.",
        "I can\u2019t find that in the documentation.",
        "There is no information about SOC 2 reports.",
    ],
)
def test_refusals_are_recognised(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "If you cannot find the Print button, open Settings > Printing.",
        "Starter does not include webhooks; upgrade to Pro.",
        "Damage is not covered by the label price.",
        "If you don't know your password, reset it from the login page.",
    ],
)
def test_real_answers_that_say_not_are_not_refusals(text):
    assert not is_refusal(text)


OFF, ON = "retrieval off · base model · Zero-shot", "retrieval on · base model · Zero-shot"
OFF_DEMO, ON_DEMO = "retrieval off · adapter demo · Zero-shot", "retrieval on · adapter demo · Zero-shot"


def hand_report(b_kind: str = "fact") -> tuple[Report, AnswerOptions, AnswerOptions]:
    questions = [Question(**{**q, "must_include": tuple(q["must_include"])}) for q in (
        {"id": "a", "question": "refunds?", "answer": "", "must_include": ["5 business days", "wallet"],
         "sources": ("refunds.md",), "kind": "fact"},
        {"id": "b", "question": "growth?", "answer": "", "must_include": ["$49"], "sources": ("plans.md",),
         "kind": b_kind},
        {"id": "c", "question": "ceo?", "answer": "", "must_include": [], "sources": (), "kind": "unanswerable"},
    )]  # fmt: skip
    refunds = ("refunds.md", "Refunds for unused labels take 5 business days to reach your postage wallet.")
    results = {
        "a": Result("Refunds take 5 business days [1].", (refunds,), False, (), 10, 1.0),
        "b": Result("I don't know. The help centre does not cover this.", (refunds,), False, (), None, 2.0),
        "c": Result("The CEO is Bob [3].", (refunds, refunds), False, (), 30, 3.0),
    }
    rag, no_rag = AnswerOptions(use_retrieval=True), AnswerOptions(use_retrieval=False)
    no_rag_results = {
        "a": Result("Refunds take 5 business days and reach your wallet.", (), False, (), 12, 0.5),
        "b": Result("Growth is $49.", (), False, (), 4, 0.5),
        "c": Result("I don't know.", (), False, (), 3, 0.5),
    }
    cells = {(q, rag): r for q, r in results.items()} | {(q, no_rag): r for q, r in no_rag_results.items()}
    retrieved = {"a": ["plans.md", "refunds.md"], "b": ["plans.md"]}
    return Report(questions, [no_rag, rag], cells, retrieved, {"question_set": "hand.jsonl"}), rag, no_rag


def test_configuration_metrics_on_a_worked_example():
    report, rag, no_rag = hand_report()
    got = report.metrics(rag)

    assert got["hit@1"] == 0.5 and got["hit@5"] == 1.0 and got["mrr"] == 0.75 and got["all@5"] == 1.0
    assert got["recall"] == 0.25  # a: 1 of 2 terms, b: a refusal finds none
    assert got["refusal_acc"] == 0.0 and got["false_refusal"] == 0.5
    assert got["grounded"] == 0.5  # a: every word in the passage; c: "ceo", "bob" in none; b refused
    assert got["cite_valid"] == 0.5  # a cites [1] of 1 passage; c cites [3] of 2
    assert got["cite_source"] == 1.0
    assert got["latency_p50"] == 2.0 and got["latency_p95"] == pytest.approx(2.9)
    assert got["tokens"] == 20.0

    plain = report.metrics(no_rag)
    assert plain["hit@1"] is None and plain["grounded"] is None and plain["cite_valid"] is None
    assert plain["recall"] == 1.0 and plain["refusal_acc"] == 1.0 and plain["false_refusal"] == 0.0


def test_markdown_has_one_row_per_configuration_and_bolds_the_best():
    report, _, _ = hand_report()
    text = report.to_markdown()

    lines = [line for line in text.splitlines() if line.startswith("|")]
    header, rule, *rows = ([cell.strip() for cell in line.strip("|").split("|")] for line in lines)
    assert header == ["configuration", *(metric.header for metric in METRICS)]
    assert rule[0].startswith(":-") and all(cell.endswith("-:") for cell in rule[1:])  # numbers align right
    rows = {cells[0]: dict(zip(header, cells, strict=True)) for cells in rows}
    assert rows[OFF]["recall"] == "**1.00**"  # recall 1.00 beats 0.25
    assert rows[ON]["recall"] == "0.25"
    assert rows[OFF]["hit@1"] == ""  # does not apply without retrieval
    # one value per column: nothing to compare, nothing bold
    assert [rows[ON][key] for key in ("hit@1", "hit@5", "MRR@5", "all@5")] == ["0.50", "1.00", "0.75", "1.00"]
    assert "How each metric is computed" in text and "- **grounded**:" in text
    assert "by question kind" not in text  # one kind: nothing to split


def test_markdown_splits_recall_by_question_kind_when_there_are_several():
    text = hand_report(b_kind="multi-hop")[0].to_markdown()

    table = text.split("Must-include recall by question kind:")[1].strip().split("\n\n")[0].splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert cells[0] == ["configuration", "fact", "multi-hop"]
    assert cells[2:] == [[OFF, "1.00", "1.00"], [ON, "0.50", "0.00"]]


# -- question sets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        (json.dumps({**QUESTIONS[0], "id": "x"} | {"kind": None}), "line 2: 'kind' is None"),
        (
            json.dumps({k: v for k, v in QUESTIONS[0].items() if k != "answer"} | {"id": "x"}),
            "line 2: missing 'answer'",
        ),
        (json.dumps({**QUESTIONS[0], "id": "x", "must_include": "5 days"}), "line 2: 'must_include' must be a list"),
        (json.dumps({**QUESTIONS[0], "id": "x", "source": 3}), "line 2: 'source' must be a path"),
        (json.dumps({**QUESTIONS[0], "id": "x", "kind": "trivia"}), "line 2: 'kind' is 'trivia'"),
        (json.dumps({**QUESTIONS[0], "id": "x", "source": None}), "line 2: 'kind' is 'fact' but 'source' is None"),
        (json.dumps(QUESTIONS[0]), "line 2: id 'q1' is already used on line 1"),
    ],
)
def test_a_bad_question_set_names_the_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(QUESTIONS[0]) + "\n" + bad_line + "\n")
    with pytest.raises(QuestionSetError, match=r"qa\.jsonl") as caught:
        load_questions(path)
    assert message in str(caught.value)


def test_every_bad_line_is_reported_at_once(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("[1]\n\n" + json.dumps(QUESTIONS[0]) + "\n{oops\n")
    with pytest.raises(QuestionSetError, match=r"2 bad lines(.|\n)*line 1: expected a JSON object(.|\n)*line 4"):
        load_questions(path)
    with pytest.raises(QuestionSetError, match="does not exist"):
        load_questions(tmp_path / "missing.jsonl")


def test_the_sample_question_set_loads():
    questions = load_questions("data/kb_qa.jsonl")
    assert len(questions) >= 40 and any(len(q.sources) > 1 for q in questions)
    assert all(q.answerable == (q.kind != "unanswerable") for q in questions)


def test_an_unknown_source_fails_before_any_model_call(kb, tmp_path):
    _, store = kb
    model = FakeChatModel()
    path = write_set(tmp_path / "qa.jsonl", [QUESTIONS[0], {**QUESTIONS[1], "source": ["plans.md", "refundz.md"]}])
    with pytest.raises(QuestionSetError) as caught:
        run_evaluation(make_engine(store, model), load_questions(path), [AnswerOptions()], question_set=path)
    message = str(caught.value)
    assert "line 2: 'refundz.md' (did you mean 'refunds.md'?)" in message
    assert "Wrong collection" in message and "rag-ingest" in message
    assert model.calls == []


# -- the grid, the run and the cache --------------------------------------------------------


def test_one_adapter_makes_a_grid_of_four_and_each_cell_is_asked(kb, tmp_path):
    _, store = kb
    model = FakeChatModel(adapters=("demo",))
    chat = make_engine(store, model)
    configs = default_configs(chat)
    assert [c.label for c in configs] == [OFF, ON, OFF_DEMO, ON_DEMO]

    questions = load_questions(write_set(tmp_path / "qa.jsonl", QUESTIONS))
    report = run_evaluation(chat, questions, configs)
    assert len(model.calls) == 12 and len(report.rows()) == 12
    assert [call["adapter"] for call in model.calls] == [None] * 6 + ["demo"] * 6
    assert report.summary()["configs"][3]["metrics"]["hit@1"] == 1.0
    assert report.rows()[0]["sources"] == [] and report.rows()[-1]["sources"]


def test_the_grid_axes_and_narrowing(kb):
    chat = make_engine(kb[1])

    def labels(*axes, **narrowed):
        return [config.label for config in default_configs(chat, axes, **narrowed)]

    on = "retrieval on · base model"
    assert labels("strategy") == [f"{on} · Zero-shot", f"{on} · Few-shot", f"{on} · Chain of thought"]
    assert labels("retrieval", strategies=["cot"]) == [
        "retrieval off · base model · Chain of thought",
        "retrieval on · base model · Chain of thought",
    ]
    assert labels("adapter", adapters=["demo"]) == [f"{on} · Zero-shot", "retrieval on · adapter demo · Zero-shot"]
    assert labels("retrieval", "adapter", "strategy") and len(labels("retrieval", "adapter", "strategy")) == 12
    with pytest.raises(AdapterNotFoundError, match="'other' is not loaded; loaded: demo"):
        default_configs(chat, adapters=["other"])


def test_a_second_run_is_served_from_the_cache_and_a_new_question_costs_only_its_own_calls(kb, tmp_path):
    _, store = kb
    model = FakeChatModel(adapters=("demo",))
    chat = make_engine(store, model)
    cache_file = tmp_path / "cache" / "results.jsonl"
    configs = default_configs(chat)
    two = load_questions(write_set(tmp_path / "qa.jsonl", QUESTIONS[:2]))
    first = run_evaluation(chat, two, configs, cache=ResultCache(cache_file))
    assert len(model.calls) == 8 and first.cached == 0

    again = run_evaluation(chat, two, configs, cache=ResultCache(cache_file))
    assert len(model.calls) == 8 and again.cached == 8
    assert again.summary()["configs"] == first.summary()["configs"]

    three = load_questions(write_set(tmp_path / "qa.jsonl", QUESTIONS))
    run_evaluation(chat, three, configs, cache=ResultCache(cache_file))
    new_calls = model.calls[8:]
    assert len(new_calls) == 4 and all("Who is the CEO?" in call["messages"][-1].content for call in new_calls)

    run_evaluation(chat, three, configs, cache=ResultCache(cache_file, read=False))
    assert len(model.calls) == 8 + 4 + 12  # --no-cache asks everything again


def test_re_ingesting_a_changed_document_invalidates_the_cache(kb, tmp_path):
    folder, store = kb
    model = FakeChatModel()
    cache_file = tmp_path / "results.jsonl"
    questions = load_questions(write_set(tmp_path / "qa.jsonl", QUESTIONS[:1]))
    run_evaluation(make_engine(store, model), questions, [AnswerOptions()], cache=ResultCache(cache_file))
    (folder / "refunds.md").write_text(PAGES["refunds.md"].replace("5 business", "7 business"))
    ingest(folder, store)

    run_evaluation(make_engine(store, model), questions, [AnswerOptions()], cache=ResultCache(cache_file))
    assert len(model.calls) == 2


class CalibratedEngine(DemoEngine):
    """The same adapter after `python -m adapters.training.calibrate` gave its card a first-token bias."""

    def adapters(self):
        card = AdapterCard(created="2025-01-01T00:00:00", first_token_bias={"I don't know": -1.5})
        return [AdapterInfo(name="demo", card=card)]


def test_calibrating_an_adapter_invalidates_its_cached_answers_only(kb, tmp_path):
    _, store = kb
    model = FakeChatModel(adapters=("demo",))
    cache = tmp_path / "results.jsonl"
    questions = load_questions(write_set(tmp_path / "qa.jsonl", QUESTIONS[:1]))
    configs = [AnswerOptions(), AnswerOptions(adapter="demo")]
    run_evaluation(make_engine(store, model), questions, configs, cache=ResultCache(cache))

    engine = CalibratedEngine(Retriever(store, FakeEmbeddings(), top_k=3), model, abstain_threshold=0.0)
    report = run_evaluation(engine, questions, configs, cache=ResultCache(cache))
    assert len(model.calls) == 3 and report.cached == 1  # the base model's answer still counts


class InterruptedModel(FakeChatModel):
    """Stands in for Ctrl-C: the third question asked raises KeyboardInterrupt."""

    interrupt_at: int = 3

    def _reply(self, messages, kwargs):
        if len(self.calls) + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        return super()._reply(messages, kwargs)


def test_an_interrupted_run_keeps_what_finished_and_resumes(kb, tmp_path):
    _, store = kb
    cache_file = tmp_path / "results.jsonl"
    questions = load_questions(write_set(tmp_path / "qa.jsonl", QUESTIONS))
    configs = default_configs(make_engine(store))
    with pytest.raises(KeyboardInterrupt):  # in the second batch of two: the first is kept
        run_evaluation(make_engine(store, InterruptedModel(adapters=("demo",))), questions, configs,
                       cache=ResultCache(cache_file), batch=2)  # fmt: skip
    assert len(ResultCache(cache_file)) == 2

    model = FakeChatModel(adapters=("demo",))
    report = run_evaluation(make_engine(store, model), questions, configs, cache=ResultCache(cache_file))
    assert len(model.calls) == 12 - 2 and report.cached == 2


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def cli(kb, tmp_path, monkeypatch):
    model = FakeChatModel(adapters=("demo",), replies=["Refunds take 5 business days [1].", "I don't know."])
    # A fresh store per run, as the real build_engine opens one: the CLI closes it when done.
    monkeypatch.setattr(build, "build_engine", lambda settings: make_engine(open_store(kb[0]), model))
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    return model, write_set(tmp_path / "qa.jsonl", QUESTIONS), tmp_path / "out"


def test_the_cli_writes_the_three_files_and_prints_the_table(cli, capsys):
    _, questions, out = cli
    assert cli_eval.main([str(questions), "--out", str(out)]) == 0
    captured = capsys.readouterr()

    report = json.loads((out / "report.json").read_text())
    assert [c["label"] for c in report["configs"]] == [OFF, ON, OFF_DEMO, ON_DEMO]
    assert {"model", "collection", "question_set", "date", "settings", "rows", "metric_definitions"} <= report.keys()
    assert report["collection"]["fingerprint"]["embed_model"] == "fake" and len(report["rows"]) == 12
    assert (out / "report.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "report.md").read_text() in captured.out and "**" in captured.out
    assert f"[4/4] {ON_DEMO}" in captured.err and "12 answers generated" in captured.err


def test_the_cli_json_summary_and_a_cached_rerun(cli, capsys):
    model, questions, out = cli
    assert cli_eval.main([str(questions), "--out", str(out), "--grid", "retrieval", "--limit", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["questions"] == 2 and [c["label"] for c in summary["configs"]] == [OFF, ON]
    assert summary["configs"][1]["metrics"]["hit@5"] == 1.0 and summary["configs"][0]["metrics"]["hit@5"] is None

    assert cli_eval.main([str(questions), "--out", str(out), "--grid", "retrieval", "--limit", "2", "--json"]) == 0
    assert len(model.calls) == 4 and json.loads(capsys.readouterr().out)["results_cached"] == 4


def test_cli_errors_are_one_line_with_the_right_exit_code(cli, tmp_path, capsys):
    model, _, out = cli
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(QUESTIONS[0]) + "\n{oops\n")
    assert cli_eval.main([str(bad), "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"rag-eval: {bad}, line 2: not valid JSON")
    unknown = write_set(tmp_path / "unknown.jsonl", [{**QUESTIONS[0], "source": "nope.md"}])
    assert cli_eval.main([str(unknown)]) == 1 and model.calls == []
    with pytest.raises(SystemExit) as usage:
        cli_eval.main([str(bad), "--grid", "retrieval,temperature"])
    assert usage.value.code == 2


def test_ctrl_c_exits_130_and_says_what_is_cached(kb, tmp_path, monkeypatch, capsys):
    model = InterruptedModel(adapters=("demo",))
    monkeypatch.setattr(build, "build_engine", lambda settings: make_engine(kb[1], model))
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    questions = write_set(tmp_path / "qa.jsonl", QUESTIONS)

    assert cli_eval.main([str(questions), "--out", str(tmp_path / "out"), "--batch", "2"]) == 130
    assert "interrupted; 2 results cached" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli_eval.main(["--help"])
    text = capsys.readouterr().out
    options = ("--grid", "--adapters", "--strategies", "--limit", "--batch", "--out", "--no-cache", "--json")
    for option in (*options, "results.jsonl"):
        assert option in text


def test_help_explains_every_metric_as_the_report_does(capsys):
    with pytest.raises(SystemExit):
        cli_eval.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrapped, so a definition reads as one line
    for metric in METRICS:
        assert f"{metric.header} (" in text and " ".join(metric.how.split()) in text


def test_write_report_returns_the_paths(tmp_path):
    report, _, _ = hand_report()
    paths = write_report(report, tmp_path / "r")
    assert sorted(paths) == ["chart", "json", "markdown"] and all(path.exists() for path in paths.values())


def test_importing_the_evaluation_loads_neither_torch_nor_matplotlib():
    code = (
        "import sys, chatbot.eval.run, chatbot.cli.evaluate\n"
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_served_adapters_beside_a_local_model_join_the_grid_as_served_options():
    class Engine:
        served = SimpleNamespace(model_name="base-135m")

        def adapters(self):
            return [
                AdapterInfo("demo"),
                AdapterInfo("base-135m", served=True),
                AdapterInfo("demo", served=True),
            ]

    everything = default_configs(Engine(), ("adapter",))
    assert [(c.adapter, c.served) for c in everything] == [
        (None, False),
        ("demo", False),
        (None, True),  # the served base model, by its name: no adapter
        ("demo", True),
    ]
    named = default_configs(Engine(), ("adapter",), adapters=["demo"], served_adapters=["demo"])
    assert [c.label for c in named] == [
        "retrieval on · base model · Zero-shot",
        "retrieval on · adapter demo · Zero-shot",
        "retrieval on · served adapter demo · Zero-shot",
    ]
    assert default_configs(Engine(), ("retrieval",), served_adapters=["demo"])[0].served
    with pytest.raises(AdapterNotFoundError, match="drop it from --served-adapters"):
        default_configs(Engine(), served_adapters=["other"])


# -- the model's identity: its weights, not its name ------------------------------------------


class Weights:
    """What a loaded transformers model says of where its weights came from."""

    def __init__(self, folder):
        self.name_or_path = str(folder)


class LocalWeightsModel(FakeChatModel):
    """A scripted model that knows its weights the way the local runtime does."""

    model: Any = None

    def identity(self) -> dict[str, Any]:
        return weights_identity(self.model)


def test_two_weights_of_one_model_name_do_not_share_cached_answers(kb, tmp_path):
    _, store = kb
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights before fine-tuning")
    model = LocalWeightsModel(model=Weights(folder))  # the same model name throughout
    cache = tmp_path / "results.jsonl"
    questions = load_questions(write_set(tmp_path / "qa.jsonl", QUESTIONS[:1]))

    run_evaluation(make_engine(store, model), questions, [AnswerOptions()], cache=ResultCache(cache))
    run_evaluation(make_engine(store, model), questions, [AnswerOptions()], cache=ResultCache(cache))
    assert len(model.calls) == 1  # the same weights: answered from the cache

    (folder / "model.safetensors").write_bytes(b"weights after fine-tuning, saved over them")
    run_evaluation(make_engine(store, model), questions, [AnswerOptions()], cache=ResultCache(cache))
    assert len(model.calls) == 2

    other = tmp_path / "copy"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"other weights")
    model.model = Weights(other)
    report = run_evaluation(make_engine(store, model), questions, [AnswerOptions()], cache=ResultCache(cache))
    assert len(model.calls) == 3 and report.cached == 0


def test_a_served_model_is_known_by_its_server_and_the_weights_it_serves(kb, tmp_path):
    from fake_openai import BASE, FakeServer

    from chatbot.core.config import Settings
    from chatbot.llm.remote import build_remote_chat_model

    _, store = kb
    cache = tmp_path / "results.jsonl"
    questions = load_questions(write_set(tmp_path / "qa.jsonl", QUESTIONS[:1]))
    server = FakeServer()
    try:
        for root in ("/models/support-lm-7b", "/models/support-lm-7b", "/models/support-lm-7b-v2"):
            server.models[0]["root"] = root  # the same served name, restarted on other weights
            model = build_remote_chat_model(Settings(llm_base_url=server.url), retries=0)
            engine = ChatEngine(Retriever(store, FakeEmbeddings(), top_k=3), model, abstain_threshold=0.0)
            run_evaluation(engine, questions, [AnswerOptions()], cache=ResultCache(cache))
    finally:
        server.stop()
    assert [request["model"] for request in server.requests] == [BASE, BASE]  # the second run was cached


def test_a_moved_knowledge_base_keeps_its_cached_answers_and_its_sources(kb, tmp_path):
    folder, store = kb
    model = FakeChatModel()
    cache = tmp_path / "results.jsonl"
    questions = load_questions(write_set(tmp_path / "qa.jsonl", QUESTIONS[:2]))
    run_evaluation(make_engine(store, model), questions, [AnswerOptions()], cache=ResultCache(cache))

    moved = folder.rename(tmp_path / "kb-moved")
    ingest(moved, store)  # the old paths are gone: their files are removed, the same files added again
    assert {entry["source"] for entry in store.manifest().values()} == set(PAGES)
    report = run_evaluation(make_engine(store, model), questions, [AnswerOptions()], cache=ResultCache(cache))
    assert report.cached == len(questions) and len(model.calls) == len(questions)
