"""Run against run: the paired statistics on known cases, the comparison of two small reports, and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from scipy.stats import binomtest
from test_evaluation import kb  # noqa: F401  (the fixture: a real store over three pages)

from chatbot.cli import evaluate as cli_eval
from chatbot.core.text import word_diff
from chatbot.eval.compare import CompareError, compare_runs, load_run
from chatbot.eval.questions import Question
from chatbot.eval.report import Report, Result
from chatbot.eval.run import ResultCache
from chatbot.eval.stats import (
    mcnemar_exact,
    paired_bootstrap,
    questions_for_means,
    questions_for_proportions,
)
from chatbot.options import AnswerOptions

# --- statistics on known cases --------------------------------------------------------------------------------


def test_the_bootstrap_interval_covers_a_known_small_effect_and_excludes_zero_for_a_large_one():
    rng = random.Random(7)
    before = [rng.gauss(0.5, 0.2) for _ in range(200)]
    small = [value + 0.05 + rng.gauss(0, 0.2) for value in before]
    interval = paired_bootstrap(before, small)
    assert interval.low < 0.05 < interval.high  # covers the true difference
    large = [value + 0.3 + rng.gauss(0, 0.2) for value in before]
    interval = paired_bootstrap(before, large)
    assert interval.low < 0.3 < interval.high
    assert interval.excludes_zero and interval.low > 0.2


def test_the_bootstrap_covers_the_true_difference_about_95_times_in_100():
    rng = random.Random(3)
    covered = 0
    for trial in range(100):
        before = [rng.random() for _ in range(40)]
        after = [value + 0.1 + rng.gauss(0, 0.3) for value in before]
        interval = paired_bootstrap(before, after, resamples=500, seed=trial)
        covered += interval.low <= 0.1 <= interval.high
    assert 88 <= covered <= 100  # a 95% interval, give or take the bootstrap's known small-sample shortfall


def test_the_bootstrap_is_seeded_and_an_unchanged_run_is_exactly_zero():
    before, after = [0, 1, 1, 0, 1], [1, 1, 1, 0, 0]
    assert paired_bootstrap(before, after) == paired_bootstrap(before, after)
    same = paired_bootstrap(before, before)
    assert (same.diff, same.low, same.high) == (0, 0, 0) and not same.excludes_zero


def test_mcnemar_exact_on_textbook_tables():
    # 1 against 9 discordant pairs: 2 * (C(10,0) + C(10,1)) / 2^10.
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    # Agresti's presidential approval table (794, 150, 86, 570): the discordant cells are 150 and 86.
    assert mcnemar_exact(150, 86) == pytest.approx(binomtest(86, 236, 0.5).pvalue)
    assert mcnemar_exact(150, 86) < 1e-4
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_power_calculations_on_known_values():
    # Paired means at effect size 0.5 (delta / sd): ((1.96 + 0.8416) / 0.5)^2 = 31.4 -> 32.
    diffs = [0.5 + (1 if i % 2 else -1) for i in range(1000)]  # mean 0.5, sd ~1
    assert questions_for_means(diffs) in (32, 33)
    # Connor (1987): p10 = 0.2, p01 = 0.1 -> (1.96*sqrt(0.3) + 0.8416*sqrt(0.29))^2 / 0.01 = 233.1 -> 234.
    assert questions_for_proportions(0.2, 0.1) == 234
    assert questions_for_proportions(0.1, 0.1) is None


# --- two small synthetic report folders -----------------------------------------------------------------------

QUESTIONS = [
    Question("q1", "How long do refunds take?", "", ("5 business days",), ("refunds.md",), "fact"),
    Question("q2", "What does Growth cost?", "", ("$49",), ("plans.md",), "fact"),
    Question("q3", "Do you ship to Mars?", "", (), (), "unanswerable"),
    Question("q4", "Where do I print labels?", "", ("Settings",), ("printing.md",), "howto"),
]
BASE = AnswerOptions(use_retrieval=True)
TUNED = AnswerOptions(use_retrieval=True, adapter="support")
PASSAGES = {
    "q1": ("refunds.md", "Refunds take 5 business days."),
    "q2": ("plans.md", "The Growth plan costs $49 per month."),
    "q3": ("plans.md", "Plans and prices."),
    "q4": ("faq.md", "Questions people ask."),
}


def result(question_id: str, text: str) -> Result:
    return Result(text, (PASSAGES[question_id],), False, (), 10, 0.1)


def write_run(folder: Path, answers: dict[AnswerOptions, dict[str, str]], questions=QUESTIONS) -> Path:
    """A report.json as `rag-eval --out` writes it (without the chart, which needs matplotlib)."""
    results = {(qid, config): result(qid, text) for config, texts in answers.items() for qid, text in texts.items()}
    retrieved = {q.id: [PASSAGES[q.id][0]] for q in questions if q.answerable}
    report = Report(list(questions), list(answers), results, retrieved)
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(report.to_json()))
    return folder


BEFORE = {
    "q1": "Refunds take a while.",
    "q2": "The Growth plan costs $49 per month.",
    "q3": "Yes, we ship everywhere.",
    "q4": "Print them from the app.",
}
AFTER = {
    "q1": "Refunds take 5 business days.",
    "q2": "The Growth plan costs $49 per month.",
    "q3": "I don't know.",
    "q4": "Print them from the app.",
}


@pytest.fixture
def runs(tmp_path):
    a = write_run(tmp_path / "a", {BASE: BEFORE, TUNED: BEFORE})
    b = write_run(tmp_path / "b", {BASE: BEFORE, TUNED: AFTER})
    return a, b


def test_comparing_two_reports_lists_the_questions_that_moved_and_which_metric(runs):
    comparison = compare_runs(load_run(runs[0]), load_run(runs[1]))
    assert [(p.label_a, p.questions) for p in comparison.pairs] == [(BASE.label, 4), (TUNED.label, 4)]
    unchanged, tuned = comparison.pairs
    assert unchanged.changes == []
    assert {change.id: change.moved for change in tuned.changes} == {
        "q1": {"recall": (0.0, 1.0), "grounded": (pytest.approx(2 / 3), 1.0)},
        "q3": {"refusal_acc": (0.0, 1.0)},
    }
    q1 = tuned.changes[0]
    assert (q1.answer_a, q1.answer_b) == (BEFORE["q1"], AFTER["q1"])
    assert q1.diff == word_diff(BEFORE["q1"], AFTER["q1"]) == "- a while.\n+ 5 business days."
    metrics = {m.key: m for m in tuned.metrics}
    assert metrics["recall"].pairs == 3 and metrics["recall"].interval.diff == pytest.approx(1 / 3)
    assert (metrics["refusal_acc"].gained, metrics["refusal_acc"].lost, metrics["refusal_acc"].p_value) == (1, 0, 1.0)
    assert metrics["hit@5"].direction == "same" and metrics["hit@5"].mean_a == pytest.approx(2 / 3)
    assert not any(m.beyond_noise for m in tuned.metrics)  # one question is never beyond noise


def test_a_small_shift_in_groundedness_is_not_a_move_but_still_counts_in_the_interval(tmp_path):
    grown = "The Growth plan costs $49 per month. " * 2
    a = write_run(tmp_path / "a", {BASE: {**BEFORE, "q2": grown}})
    b = write_run(tmp_path / "b", {BASE: {**BEFORE, "q2": grown + "Billed."}})  # one word in 13 not grounded
    pair = compare_runs(load_run(a), load_run(b)).pairs[0]
    assert pair.changes == []
    grounded = next(m for m in pair.metrics if m.key == "grounded")
    assert -0.1 < grounded.interval.diff < 0


def test_a_large_effect_is_beyond_noise_and_the_summary_says_so(tmp_path):
    questions = [Question(f"u{i}", f"Out of scope {i}?", "", (), (), "unanswerable") for i in range(20)]
    for i in range(20):
        PASSAGES[f"u{i}"] = ("plans.md", "Plans.")
    a = write_run(tmp_path / "a", {BASE: {q.id: "Sure, here it is." for q in questions}}, questions)
    b = write_run(tmp_path / "b", {BASE: {q.id: "I don't know." for q in questions}}, questions)
    comparison = compare_runs(load_run(a), load_run(b))
    refusal = next(m for m in comparison.pairs[0].metrics if m.key == "refusal_acc")
    assert refusal.p_value == pytest.approx(2 / 2**20) and refusal.beyond_noise and refusal.direction == "better"
    summary = "\n".join(comparison.summary())
    assert "refuses unanswerable: 0.00 -> 1.00" in summary and "Beyond noise: refuses unanswerable." in summary
    assert "Connor (1987)" in summary


def test_a_small_change_says_how_many_questions_would_show_it(runs):
    comparison = compare_runs(load_run(runs[0]), load_run(runs[1]))
    line = next(line for line in comparison.summary() if line.startswith("- recall") and "->" in line)
    needed = next(m for m in comparison.pairs[1].metrics if m.key == "recall").needed
    assert needed and f"needs about {needed} answerable questions" in line and "within noise" in line


def test_two_configurations_of_one_report(runs):
    run = load_run(runs[1])
    comparison = compare_runs(run, run, configs=(BASE.label, TUNED.label))
    assert [change.id for change in comparison.pairs[0].changes] == ["q1", "q3"]
    with pytest.raises(CompareError, match="name them with --configs"):
        compare_runs(run, run)
    with pytest.raises(CompareError, match="'nope' is not one of A's"):
        compare_runs(run, run, configs=("nope", TUNED.label))
    # A part of exactly one label names it; a part of several is an error that lists them.
    short = compare_runs(run, run, configs=("base model", "support"))
    assert (short.pairs[0].label_a, short.pairs[0].label_b) == (BASE.label, TUNED.label)
    with pytest.raises(CompareError, match="2 match it"):
        compare_runs(run, run, configs=("retrieval on", "support"))


def test_different_question_sets_compare_the_intersection_and_say_what_was_dropped(tmp_path):
    a = write_run(tmp_path / "a", {BASE: BEFORE})
    b = write_run(tmp_path / "b", {BASE: {k: v for k, v in AFTER.items() if k != "q4"}}, QUESTIONS[:3])
    comparison = compare_runs(load_run(a), load_run(b))
    assert (comparison.questions, comparison.only_a, comparison.only_b) == (3, ["q4"], [])
    assert "compared the 3 in both, dropped 1 only in A and 0 only in B" in comparison.notes()[0]


def test_runs_with_no_configuration_in_common_name_both_sides(tmp_path):
    a = write_run(tmp_path / "a", {BASE: BEFORE})
    b = write_run(tmp_path / "b", {TUNED: AFTER})
    with pytest.raises(CompareError, match=r"share no configuration.*--configs"):
        compare_runs(load_run(a), load_run(b))


def test_a_folder_that_is_not_a_report_is_a_clear_error(tmp_path):
    with pytest.raises(CompareError, match=r"not an evaluation report: it holds no report\.json"):
        load_run(tmp_path)
    (tmp_path / "report.json").write_text('{"version": 1}')
    with pytest.raises(CompareError, match="per-question `rows` missing"):
        load_run(tmp_path)
    (tmp_path / "report.json").write_text('{"rows": [{"id": "q1"}]}')
    with pytest.raises(CompareError, match="per-question `rows` missing"):
        load_run(tmp_path)
    with pytest.raises(CompareError, match="does not exist"):
        load_run(tmp_path / "missing")


def test_cache_snapshots_are_scored_against_the_question_set(tmp_path):
    for name, answers in (("a", BEFORE), ("b", AFTER)):
        cache = ResultCache(tmp_path / f"{name}.jsonl")
        cache.put("old-entry", result("q1", "from before ragtune recorded questions"))
        for question in QUESTIONS:
            about = {"id": question.id, "question": question.question, "config": TUNED.to_json()}
            cache.put(f"{name}-{question.id}", result(question.id, answers[question.id]), about)
    with pytest.raises(CompareError, match="give the question set"):
        load_run(tmp_path / "a.jsonl")
    a, b = (load_run(tmp_path / f"{name}.jsonl", QUESTIONS) for name in "ab")
    assert a.info["cache_entries_skipped"] == 1
    comparison = compare_runs(a, b)
    assert [change.id for change in comparison.pairs[0].changes] == ["q1", "q3"]


# --- the command line -----------------------------------------------------------------------------------------


def test_cli_prints_the_moved_questions_the_intervals_and_the_summary(runs, capsys):
    assert cli_eval.main(["--compare", str(runs[0]), str(runs[1])]) == 0
    out = capsys.readouterr().out
    assert "| q1 " in out and "| q3 " in out and "| q2 " not in out
    assert "0.00 -> 1.00" in out and "no -> yes" in out and "| moved " in out and "2 of 4" in out
    assert "95% interval" in out and "McNemar p" in out and "## Summary" in out


def test_cli_json_is_one_object(runs, capsys):
    assert cli_eval.main(["--compare", str(runs[0]), str(runs[1]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["questions"] == 4 and len(data["pairs"]) == 2
    tuned = data["pairs"][1]
    assert tuned["moved"] == 2 and [c["id"] for c in tuned["changes"]] == ["q1", "q3"]
    recall = next(m for m in tuned["metrics"] if m["metric"] == "recall")
    assert recall["low"] <= recall["diff"] <= recall["high"] and recall["questions_needed"]


def test_cli_two_configurations_of_one_folder(runs, capsys):
    assert cli_eval.main(["--compare", str(runs[1]), "--configs", BASE.label, TUNED.label]) == 0
    assert "| q1 " in capsys.readouterr().out


def test_cli_errors_exit_1_with_a_message_and_usage_errors_exit_2(runs, tmp_path, capsys):
    assert cli_eval.main(["--compare", str(tmp_path), str(runs[1])]) == 1
    assert "holds no report.json" in capsys.readouterr().err
    assert cli_eval.main(["--compare", str(runs[1])]) == 1
    assert "--configs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_eval.main(["--compare", "a", "b", "c"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        cli_eval.main([])  # neither a question set nor --compare
    assert exit_info.value.code == 2


def test_a_cache_snapshot_of_a_real_run_scores_as_its_report_does(request, tmp_path):
    from test_evaluation import QUESTIONS as SET
    from test_evaluation import make_engine, write_set

    from chatbot.eval.run import default_configs, load_questions, run_evaluation

    questions = load_questions(write_set(tmp_path / "qa.jsonl", SET))
    chat = make_engine(request.getfixturevalue("kb")[1])
    report = run_evaluation(chat, questions, default_configs(chat), cache=ResultCache(tmp_path / "results.jsonl"))
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.json").write_text(json.dumps(report.to_json()))

    comparison = compare_runs(load_run(tmp_path / "report"), load_run(tmp_path / "results.jsonl", questions))
    assert len(comparison.pairs) == 4 and comparison.unmatched_a == comparison.unmatched_b == []
    assert all(pair.questions == 3 and pair.changes == [] for pair in comparison.pairs)
