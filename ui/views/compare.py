"""Compare: one question, answered by every cell of retrieval off/on x adapter off/on, side by side.

Cells run one after another in the script thread, each stream consumed and closed
before the next starts: the model holds a lock for a whole stream, so two open
streams in one thread would wait on each other forever. Finished cells are kept in
the session, so a rerun (a download, an interruption) redraws them and runs only
the cells still pending.
"""

from __future__ import annotations

import streamlit as st

from chatbot.core.errors import RagtuneError
from ui.common import STRATEGY_LABELS, engine_or_stop, loaded_adapters, render_details, show_error, stream_answer
from ui.comparison import Cell, base_of, grid, similarity, to_json, to_markdown, word_diff
from ui.safe_markdown import plain, safe_markdown

st.set_page_config(page_title="ragtune · Compare", layout="wide")
st.title("Compare")
st.caption("One question, answered with retrieval off and on, with and without the adapter, side by side.")
engine = engine_or_stop()
adapters = loaded_adapters(engine)

with st.form("compare"):
    question = st.text_input("Question", placeholder="How long do refunds take?")
    left, middle, right = st.columns([2, 2, 1], vertical_alignment="bottom")
    choice = left.selectbox(
        "Adapter", list(adapters) or [""], format_func=lambda name: name or "No adapter loaded", disabled=not adapters
    )
    strategy = middle.selectbox("Prompt strategy", list(STRATEGY_LABELS), format_func=STRATEGY_LABELS.__getitem__)
    every_strategy = right.checkbox("All strategies", help="One row per prompt strategy")
    if st.form_submit_button("Compare", type="primary", icon=":material/compare:"):
        if not question.strip():
            st.warning("Type a question first.")
            st.stop()
        strategies = list(STRATEGY_LABELS) if every_strategy else [strategy]
        st.session_state.comparison = {
            "question": question.strip(),
            "cells": grid(strategies, chosen.name, served=chosen.served)
            if (chosen := adapters.get(choice))
            else grid(strategies, None),
        }

comparison = st.session_state.get("comparison")
if comparison is None:
    st.stop()
question, cells = comparison["question"], comparison["cells"]
if not adapters:
    st.caption("No adapter is loaded, so the adapter column has nothing to run.")


def pending(cell: Cell) -> bool:
    return cell.answer is None and cell.error is None and cell.skipped is None


def run_cell(cell: Cell) -> None:
    """Answer one cell into the current container (its stream is closed before this returns)."""
    try:
        cell.answer = stream_answer(engine, question, [], cell.options)
    except RagtuneError as error:
        cell.error = str(error)


def show_cell(cell: Cell) -> None:
    if cell.answer is None:
        if cell.error:
            show_error(cell.error)
        else:
            st.info(cell.skipped, icon=":material/info:")
        return
    base = base_of(cells, cell)
    render_details(cell.answer, None, compact=True)
    if base is not cell and base.answer is not None:
        same = similarity(base.answer.text, cell.answer.text)
        if same == 1:
            st.caption("Same words as the first cell.")
            return
        with st.expander(f"Diff vs. first cell ({same:.0%} same words)"):
            st.code(word_diff(base.answer.text, cell.answer.text) or "(same words)", language="diff", wrap_lines=True)


todo = sum(pending(cell) for cell in cells)
progress = st.progress(0.0, text=f"Answering {len(cells)} cells...") if todo else None
st.markdown(f"**{plain(question)}**")
slots = []
strategies = list(dict.fromkeys(cell.options.strategy for cell in cells))
for strategy in strategies:
    row = [(i, cell) for i, cell in enumerate(cells) if cell.options.strategy == strategy]
    if len(strategies) > 1:
        st.subheader(STRATEGY_LABELS[strategy])
    for column, (index, cell) in zip(st.columns(len(row)), row, strict=True):
        box = column.container(border=True, key=f"cell-{index}")
        box.markdown(f"##### {cell.title}")
        slots.append((box, cell))

for done, (box, cell) in enumerate(slots, 1):
    with box:
        if pending(cell):
            progress.progress((done - 1) / len(slots), text=f"Answering {done} of {len(slots)}: {cell.title}...")
            run_cell(cell)  # the streamed text stays in the cell
        elif cell.answer is not None:
            st.markdown(safe_markdown(cell.answer.text))
        show_cell(cell)
if progress is not None:
    progress.empty()

downloads = (
    ("Download Markdown", to_markdown(question, cells), "comparison.md", "text/markdown"),
    ("Download JSON", to_json(question, cells), "comparison.json", "application/json"),
)
for column, (label, data, file_name, mime) in zip(st.columns(2), downloads, strict=True):
    column.download_button(
        label, data, file_name=file_name, mime=mime, on_click="ignore", icon=":material/download:", width="stretch"
    )
