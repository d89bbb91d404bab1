"""The Evaluate page's "Compare two runs" section: pick two report folders, see what moved and whether it is noise.

The arithmetic is `chatbot.eval.compare`'s; this module only lays it out. Paths, labels,
questions and answers are text from files and from the model, so every one of them goes
through `ui.safe_markdown` before Streamlit renders it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from chatbot.eval.compare import MetricChange, PairComparison, RunComparison, compare_runs, load_run
from ui.common import run_guarded
from ui.comparison import similarity, word_diff
from ui.safe_markdown import plain, safe_markdown

DEFAULT_REPORTS = "bench/eval"
EVERY = "(every configuration both runs have)"
SHOWN_QUESTIONS = 50  # expanders per configuration pair; the rest are in the JSON


def report_folders(base: Path) -> list[str]:
    """Folders at most three levels under `base` that hold a report.json, as paths relative to `base`."""
    found = {path.parent for depth in range(4) for path in base.glob("*/" * depth + "report.json")}
    return sorted(folder.relative_to(base).as_posix() for folder in found)


def _summary_markdown(lines: list[str]) -> str:
    # Each line is escaped whole (paths and labels are the user's); only the list bullets stay Markdown.
    return "\n\n".join(f"- {plain(line[2:])}" if line.startswith("- ") else plain(line) for line in lines)


def _metric_rows(pair: PairComparison) -> list[dict]:
    rows = []
    for change in pair.metrics:
        item = change.to_json()
        rows.append(
            {
                "metric": item["header"],
                "over": f"{item['pairs']} {item['over']}",
                "A": item["a"],
                "B": item["b"],
                "B - A": item["diff"],
                "95% interval": "" if item["low"] is None else f"{item['low']:+.2f} to {item['high']:+.2f}",
                "McNemar p": item["p_value"],
                "questions needed": item["questions_needed"],
                "verdict": "beyond noise"
                if item["beyond_noise"]
                else ("no change" if item["direction"] == "same" else "within noise"),
            }
        )
    return rows


def show_pair(pair: PairComparison, index: int) -> None:
    """One configuration pair: its metric table, then each question that moved with both answers and the diff."""
    st.subheader(plain(f"A: {pair.label_a} · B: {pair.label_b}"))
    st.dataframe(_metric_rows(pair), hide_index=True, width="stretch", key=f"run-metrics-{index}")
    st.caption(f"{len(pair.changes)} of {pair.questions} questions moved.")
    for change in pair.changes[:SHOWN_QUESTIONS]:
        moved = ", ".join(
            f"{metric.metric.header} {_shown(metric, a)} → {_shown(metric, b)}"
            for metric in pair.metrics
            if metric.key in change.moved
            for a, b in [change.moved[metric.key]]
        )
        with st.expander(plain(f"{change.id} ({change.kind}): {moved}")):
            st.markdown(f"**{plain(change.question)}**")
            left, right = st.columns(2)
            for column, title, answer in ((left, "A", change.answer_a), (right, "B", change.answer_b)):
                box = column.container(border=True)
                box.markdown(f"##### {title}")
                box.markdown(safe_markdown(answer))
            same = similarity(change.answer_a, change.answer_b)
            st.caption(f"Word diff, A to B ({same:.0%} same words)")
            st.code(word_diff(change.answer_a, change.answer_b) or "(same words)", language="diff", wrap_lines=True)
    if len(pair.changes) > SHOWN_QUESTIONS:
        st.caption(f"The first {SHOWN_QUESTIONS} shown; the JSON download has all {len(pair.changes)}.")


def _shown(metric: MetricChange, value: float | None) -> str:
    if value is None:
        return "-"
    return ("yes" if value else "no") if metric.yes_no else f"{value:.2f}"


def show_comparison(comparison: RunComparison) -> None:
    """The summary in words, then every configuration pair, then the JSON download."""
    import json

    st.markdown(_summary_markdown(comparison.summary()))
    for index, pair in enumerate(comparison.pairs):
        show_pair(pair, index)
    st.download_button(
        "Comparison (JSON)",
        json.dumps(comparison.to_json(), indent=2, ensure_ascii=False),
        file_name="comparison.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/download:",
    )


def compare_section() -> None:
    """Pick two report folders under a base folder (and optionally a configuration of each), then compare."""
    st.header("Compare two runs")
    st.caption(
        "Two reports written by `rag-eval --out DIR`: per question which metric moved, the answers side by side, "
        "and per metric the paired difference with its 95% interval and whether it is beyond noise."
    )
    base = Path(st.text_input("Report folders under", value=DEFAULT_REPORTS, key="runs_base"))
    folders = report_folders(base) if base.is_dir() else []
    if not folders:
        st.info(
            f"No folder under {plain(str(base))} holds a report.json: write one with `rag-eval QA.jsonl --out DIR`."
        )
        return
    picks = []
    for column, side, default in zip(st.columns(2), "AB", (0, min(1, len(folders) - 1)), strict=True):
        folder = column.selectbox(f"Run {side}", folders, index=default, key=f"run_{side}")
        run = run_guarded(lambda folder=folder: load_run(base / folder))
        if run is None:
            return
        config = column.selectbox(f"Configuration of {side}", [EVERY, *run.labels], key=f"run_config_{side}")
        picks.append((run, config))
    (run_a, config_a), (run_b, config_b) = picks
    if (config_a == EVERY) != (config_b == EVERY):
        st.info("Pick a configuration on both sides, or on neither (then every configuration both runs have).")
        return
    if config_a == EVERY and run_a.path == run_b.path:
        st.info("Both sides are one run: pick two of its configurations to compare them.")
        return
    if st.button("Compare runs", type="primary", icon=":material/compare_arrows:"):
        configs = None if config_a == EVERY else (config_a, config_b)
        st.session_state.run_comparison = run_guarded(lambda: compare_runs(run_a, run_b, configs=configs))
    comparison = st.session_state.get("run_comparison")
    if comparison is not None:
        show_comparison(comparison)
