"""How a `Report` looks: the Markdown summary and the PNG chart (layout only, no scoring)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

from chatbot.eval.metrics import METRICS

if TYPE_CHECKING:
    from chatbot.eval.report import Report


def markdown(report: Report) -> str:
    """report.md: one row per configuration, the best value of each metric in bold, then how each is computed."""
    info = report.info
    values = {config: report.metrics(config) for config in report.configs}
    shown = {config: {m.key: m.shown(values[config][m.key]) for m in METRICS} for config in report.configs}
    best = {metric.key: metric.best(values[config][metric.key] for config in report.configs) for metric in METRICS}
    rows = []
    for config in report.configs:
        cells = [config.label]
        for metric in METRICS:
            text = shown[config][metric.key]
            rounded = metric.rounded(values[config][metric.key])
            cells.append(
                f"**{text}**" if text and best[metric.key] is not None and rounded == best[metric.key] else text
            )
        rows.append(cells)
    lines = [
        f"# Evaluation of {info.get('question_set', 'a question set')}",
        "",
        _facts(report),
        "",
        _table(["configuration", *(metric.header for metric in METRICS)], rows),
        "",
        "**Bold**: the best value of its column (not marked when every configuration has the same value). "
        "Blank: the metric does not apply (retrieval columns and groundedness need retrieval on).",
        *_by_kind(report),
        "",
        "## How each metric is computed",
        "",
        *(f"- **{metric.header}**: {metric.how}." for metric in METRICS),
        "",
    ]
    return "\n".join(lines)


def _facts(report: Report) -> str:
    info = report.info
    answerable = sum(q.answerable for q in report.questions)
    parts = [
        f"{len(report.questions)} questions ({answerable} answerable, {len(report.questions) - answerable} "
        f"unanswerable) x {len(report.configs)} configurations"
    ]
    if info.get("model"):
        parts.append(f"model `{info['model']}`")
    if collection := info.get("collection"):
        parts.append(f"collection `{collection.get('name')}` ({collection.get('chunks')} chunks)")
    if info.get("date"):
        parts.append(info["date"])
    return " · ".join(parts)


def _by_kind(report: Report) -> list[str]:
    by_kind = {config: report.recall_by_kind(config) for config in report.configs}
    kinds = list(next(iter(by_kind.values()), {}))
    if len(kinds) < 2:
        return []
    rows = [
        [config.label, *("" if values[kind] is None else f"{values[kind]:.2f}" for kind in kinds)]
        for config, values in by_kind.items()
    ]
    return ["", "Must-include recall by question kind:", "", _table(["configuration", *kinds], rows)]


def _table(header: list[str], rows: list[list[str]]) -> str:
    # Cells arrive formatted ("0.50", "**1.00**", "" for not applicable): tabulate must not re-parse them.
    align = ["left", *["right"] * (len(header) - 1)]
    return tabulate(rows, headers=header, tablefmt="pipe", colalign=align, disable_numparse=True)


def draw_chart(report: Report, path: Path) -> None:
    """report.png: grouped bars, one group per metric, one bar per configuration (shares left, seconds right)."""
    import matplotlib  # only the report needs it, and it is slow to import

    matplotlib.use("Agg")  # no display: rag-eval runs in terminals and CI
    import matplotlib.pyplot as plt

    values = {config: report.metrics(config) for config in report.configs}
    panels = [[m for m in METRICS if m.unit == unit] for unit in ("share", "seconds")]
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [5, 1.4]})
    width = 0.8 / max(len(report.configs), 1)
    for ax, metrics in zip(axes, panels, strict=True):
        for index, config in enumerate(report.configs):
            # NaN draws no bar: "does not apply" must not look like a score of 0.
            heights = [_or_nan(values[config][m.key]) for m in metrics]
            positions = [n + (index - (len(report.configs) - 1) / 2) * width for n in range(len(metrics))]
            ax.bar(positions, heights, width, label=config.label)
        ax.set_xticks(range(len(metrics)), [m.header for m in metrics], rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("share (higher is better, except false refusals)")
    axes[1].set_ylabel("seconds per answer")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncols=min(len(labels), 4), fontsize="small", frameon=False)
    figure.suptitle(f"rag-eval: {report.info.get('question_set') or ''} ({len(report.questions)} questions)")
    rows = -(-len(labels) // 4)  # the legend's rows of four
    figure.tight_layout(rect=(0, 0.04 + 0.04 * rows, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value
