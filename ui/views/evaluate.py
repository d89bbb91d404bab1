"""Evaluate: a question set over the grid, with progress, the table, the chart and the files to download;
then two runs compared (ui/run_compare.py).

Answers are cached where `rag-eval` caches them, so the page and the command share
work: a re-run, or a run cut short by leaving the page, asks the model only what is
still missing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from chatbot.eval.metrics import METRICS
from chatbot.eval.questions import Question
from chatbot.eval.run import ResultCache, default_configs, load_questions, run_evaluation, write_report
from ui.common import app_settings, engine_or_stop, run_guarded, show_error
from ui.run_compare import compare_section
from ui.uploads import MAX_UPLOAD_MB, UploadError, clean_name

DEFAULT_QUESTIONS = Path("data/kb_qa.jsonl")
BEST = "font-weight: bold; background-color: rgba(33, 195, 84, 0.15)"
AXES = {"retrieval": "Retrieval off / on", "adapter": "Adapter off / on", "strategy": "Prompt strategy"}

st.set_page_config(page_title="ragtune · Evaluate", layout="wide")
st.title("Evaluate")
st.caption("Run a question set through each configuration and see which lever helped on your data.")
engine = engine_or_stop()


def read_questions(upload) -> tuple[list[Question], str] | None:
    """The uploaded question set, or the sample one; its errors (with line numbers) shown as messages."""
    if upload is None:
        return run_guarded(lambda: (load_questions(DEFAULT_QUESTIONS), str(DEFAULT_QUESTIONS)))
    try:
        name = clean_name(upload.name)
        if not name.endswith(".jsonl") or upload.size > MAX_UPLOAD_MB * 1024 * 1024:
            raise UploadError(f"{upload.name!r} is not a .jsonl file of at most {MAX_UPLOAD_MB} MB.")
    except UploadError as error:
        show_error(error)
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name  # under its own name, so an error says "my-set.jsonl, line 3"
        path.write_bytes(upload.getvalue())
        return run_guarded(lambda: (load_questions(path), name))


def table(summary: dict):
    """One row per configuration, blank where a metric does not apply, the best of each column in bold."""
    import pandas as pd  # streamlit depends on it; only the table needs it

    configs = summary["configs"]
    shown = pd.DataFrame(
        [
            {"configuration": c["label"], **{m.header: m.shown(c["metrics"].get(m.key)) for m in METRICS}}
            for c in configs
        ]
    )
    styles = pd.DataFrame("", index=shown.index, columns=shown.columns)
    for metric in METRICS:
        values = [c["metrics"].get(metric.key) for c in configs]
        best = metric.best(values)
        marked = [best is not None and metric.rounded(value) == best for value in values]
        styles.loc[marked, metric.header] = BEST
    return shown.style.apply(lambda _: styles, axis=None)


with st.form("evaluate"):
    upload = st.file_uploader(
        f"Question set (default: `{DEFAULT_QUESTIONS}`)",
        max_upload_size=MAX_UPLOAD_MB,
        help="jsonl, one question a line",
    )
    left, right = st.columns([3, 1])
    axes = left.multiselect("Vary", list(AXES), default=["retrieval", "adapter"], format_func=AXES.__getitem__)
    limit = right.number_input("Questions (0 = all)", min_value=0, value=10, step=5)
    submitted = st.form_submit_button("Run", type="primary", icon=":material/play_arrow:")

if submitted:
    loaded = read_questions(upload)
    configs = run_guarded(lambda: default_configs(engine, tuple(axes)))
    if loaded is not None and configs is not None:
        questions, name = loaded
        questions = questions[:limit] if limit else questions
        bar = st.progress(0.0, text=f"{len(questions)} questions x {len(configs)} configurations")

        def progress(done: int, total: int, config) -> None:
            bar.progress(done / total, text=f"{config.label}: {done} of {total} answers")

        cache = ResultCache(app_settings().cache_dir / "eval" / "results.jsonl")
        report = run_guarded(
            lambda: run_evaluation(engine, questions, configs, cache=cache, progress=progress, question_set=name)
        )
        bar.empty()
        if report is not None:
            with tempfile.TemporaryDirectory() as folder:
                paths = write_report(report, folder)
                files = {kind: path.read_bytes() for kind, path in paths.items()}
            st.session_state.evaluation = {"summary": report.summary(), "files": files, "fresh": cache.written}


def show_evaluation(result: dict) -> None:
    """The last run's table, chart and downloads."""
    summary = result["summary"]
    st.caption(
        f"{summary['questions']} questions ({summary['unanswerable']} unanswerable) x {len(summary['configs'])} "
        f"configurations · {result['fresh']} answers generated, {summary['results_cached']} from the cache"
    )
    st.dataframe(
        table(summary),
        hide_index=True,
        width="stretch",
        column_config={m.header: st.column_config.TextColumn(alignment="right", help=m.how) for m in METRICS},
    )
    with st.expander("How each metric is computed"):
        st.markdown("\n".join(f"- **{metric.header}**: {metric.how}." for metric in METRICS))
    st.image(result["files"]["chart"], width="stretch")
    downloads = (
        ("Report (Markdown)", "markdown", "report.md", "text/markdown"),
        ("Report (JSON)", "json", "report.json", "application/json"),
        ("Chart (PNG)", "chart", "report.png", "image/png"),
    )
    for column, (label, kind, file_name, mime) in zip(st.columns(3), downloads, strict=True):
        column.download_button(
            label,
            result["files"][kind],
            file_name=file_name,
            mime=mime,
            on_click="ignore",
            icon=":material/download:",
            width="stretch",
        )


result = st.session_state.get("evaluation")
if result is not None:
    show_evaluation(result)
st.divider()
compare_section()  # needs no run of this session: it reads report folders already written
