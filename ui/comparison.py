"""The Compare page's grid, its diffs and its exports: plain data and text, no widgets."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from chatbot.core.text import heading_path, similarity, word_diff
from chatbot.engine import Answer
from chatbot.options import AnswerOptions
from chatbot.options import grid as options_grid
from ui.common import timing_text

__all__ = ["Cell", "base_of", "grid", "similarity", "to_json", "to_markdown", "word_diff"]


@dataclass
class Cell:
    """One combination of levers, and what it produced (an answer, an error, or a reason it did not run)."""

    options: AnswerOptions
    answer: Answer | None = None
    error: str | None = None
    skipped: str | None = None

    @property
    def title(self) -> str:
        """'Retrieval on · adapter X' (the strategy is the row's)."""
        retrieval = "Retrieval on" if self.options.use_retrieval else "Retrieval off"
        if self.options.adapter:
            adapter = f"adapter {self.options.adapter}"
        else:
            adapter = "adapter" if self.skipped else "base model"  # the adapter column, with no adapter to run
        return f"{retrieval} · {adapter}"


def grid(
    strategies: list[str],
    adapter: str | None,
    *,
    served: bool = False,
    top_k: int | None = None,
    mode: str | None = None,
) -> list[Cell]:
    """Cells row by row (one row per strategy): retrieval off/on x the base model / `adapter`.

    Without an adapter the adapter column is still laid out, as cells that say why they did not run.
    """
    local, on_server = ((None,), (adapter,)) if served else ((None, adapter or ""), ())
    laid_out = options_grid(
        AnswerOptions(top_k=top_k, mode=mode),
        use_retrieval=(False, True),
        adapters=local,
        served_adapters=on_server,
        strategies=strategies,
    )
    skipped = "No adapter is loaded: train one with `rag-train-adapter`."
    return [Cell(options, skipped=skipped if options.adapter == "" else None) for options in laid_out]


def base_of(cells: list[Cell], cell: Cell) -> Cell:
    """The cell every other cell of its row is compared against: retrieval off, no adapter."""
    base = replace(cell.options, use_retrieval=False, adapter=None)
    return next(c for c in cells if c.options == base)


def to_markdown(question: str, cells: list[Cell]) -> str:
    """The comparison as a Markdown document."""
    lines = ["# ragtune comparison", "", f"**Question:** {question}", ""]
    for cell in cells:
        lines += [f"## {cell.title} · {cell.options.strategy.label}", ""]
        if cell.answer is None:
            lines += [f"_{cell.error or cell.skipped}_", ""]
            continue
        lines += [cell.answer.text, ""]
        for number, hit in enumerate(cell.answer.sources, 1):
            lines.append(f"- [{number}] {heading_path(hit.title, hit.section)} (`{hit.source}`, score {hit.score:.2f})")
        lines += ["", f"_{timing_text(cell.answer.timings)}_", ""]
    return "\n".join(lines)


def to_json(question: str, cells: list[Cell]) -> str:
    """The comparison as JSON: the question and, per cell, its options and the `rag-chat --json` answer."""
    shown = [
        {
            "options": cell.options.kwargs(),
            "label": cell.options.label,
            "answer": cell.answer.to_json() if cell.answer else None,
            "error": cell.error,
            "skipped": cell.skipped,
        }
        for cell in cells
    ]
    return json.dumps({"question": question, "cells": shown}, indent=2, ensure_ascii=False)
