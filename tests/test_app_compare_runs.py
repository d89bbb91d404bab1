"""The Evaluate page's "Compare two runs" section, headless through AppTest, on two small report folders."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from test_app import EVALUATE, engine, images_shown, kb_dir, rendered_markdown, store, use_engine  # noqa: F401
from test_compare_runs import AFTER, BASE, BEFORE, TUNED, write_run

from ui.run_compare import report_folders

pytestmark = pytest.mark.usefixtures("engine")  # the page needs an engine; comparing never asks it

EVIL = "![x](https://evil.example/pixel.png) <img src=x>"


def compare_page(base) -> AppTest:
    app = AppTest.from_file(EVALUATE, default_timeout=30).run()
    app.text_input(key="runs_base").set_value(str(base)).run()
    return app


def test_report_folders_are_found_under_the_base(tmp_path):
    write_run(tmp_path / "one", {BASE: BEFORE})
    write_run(tmp_path / "deep" / "er" / "two", {BASE: BEFORE})
    (tmp_path / "not-a-report").mkdir()
    assert report_folders(tmp_path) == ["deep/er/two", "one"]


def test_two_runs_show_the_summary_the_intervals_and_each_moved_question_side_by_side(tmp_path, request):
    write_run(tmp_path / "a-before", {BASE: BEFORE, TUNED: BEFORE})
    write_run(tmp_path / "b-after", {BASE: BEFORE, TUNED: {**AFTER, "q2": f"Growth costs $49. {EVIL}"}})
    app = compare_page(tmp_path)
    assert [box.value for box in app.selectbox if box.key in ("run_A", "run_B")] == ["a-before", "b-after"]
    next(b for b in app.button if b.label == "Compare runs").click().run()

    assert not app.exception, app.exception
    text = "\n".join(rendered_markdown(app))
    assert "Beyond noise" in text and "Connor \\(1987\\)" in text
    metrics = app.dataframe[-1].value  # the tuned pair's table
    assert list(metrics["metric"]) == ["recall", "refuses unanswerable", "false refusals", "hit@5", "grounded"]
    assert metrics["95% interval"][0].endswith("to +1.00") and metrics["verdict"][0] == "within noise"
    labels = [expander.label for expander in app.expander]
    assert any(label.startswith("q1 \\(fact\\)") for label in labels)
    assert any(label.startswith("q3 \\(unanswerable\\)\\: refuses unanswerable no → yes") for label in labels)
    q2 = "q2 \\(fact\\)\\: grounded 1\\.00 → 0\\.25"  # the answer with an image and HTML in it
    assert any(label.startswith(q2) for label in labels)
    diffs = [code.value for code in app.code]
    assert "- a while.\n+ 5 business days." in diffs
    assert images_shown(app) == []  # the answer's image and HTML are shown as text, never fetched
    assert request.getfixturevalue("engine").chat_model.calls == []  # comparing asks the model nothing


def test_two_configurations_of_one_run(tmp_path):
    write_run(tmp_path / "only", {BASE: BEFORE, TUNED: AFTER})
    app = compare_page(tmp_path)
    assert any("pick two of its configurations" in info.value for info in app.info)
    app.selectbox(key="run_config_A").set_value(BASE.label)
    app.selectbox(key="run_config_B").set_value(TUNED.label).run()
    next(b for b in app.button if b.label == "Compare runs").click().run()
    assert not app.exception, app.exception
    assert len(app.dataframe) == 1 and "2 of 4 questions moved." in [c.value for c in app.caption]


def test_a_folder_without_reports_says_how_to_write_one(tmp_path):
    app = compare_page(tmp_path)
    assert not app.exception
    assert any("rag-eval QA.jsonl --out DIR" in info.value for info in app.info)
