"""How a run comparison reads: the summary in words and the text tables `rag-eval --compare` prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tabulate import tabulate

from chatbot.eval.stats import PAIRED_MEANS, PAIRED_PROPORTIONS, RESAMPLES, SEED

if TYPE_CHECKING:
    from chatbot.eval.compare import MetricChange, PairComparison, RunComparison

RULE = (
    "Method: a change is beyond noise with an exact McNemar p < 0.05 for the yes/no metrics, "
    f"a 95% paired-bootstrap interval ({RESAMPLES:,} resamples of the questions, seed {SEED}) "
    "that excludes 0 for the shares. Questions needed (80% power, alpha 0.05): "
    f"{PAIRED_PROPORTIONS}, with ψ the share of questions that changed and δ the net share; {PAIRED_MEANS}."
)


def summary_lines(comparison: RunComparison) -> list[str]:
    """Per configuration pair, one line per metric saying how it moved and whether that is beyond noise."""
    lines = list(comparison.notes())
    for pair in comparison.pairs:
        lines.append(
            f"A = {pair.label_a} ({comparison.a}) against B = {pair.label_b} ({comparison.b}): "
            f"{pair.questions} questions, {len(pair.changes)} moved."
        )
        lines += [f"- {metric_line(metric)}" for metric in pair.metrics]
        beyond = [m.metric.header for m in pair.metrics if m.beyond_noise]
        lines.append(
            "Beyond noise: "
            + (", ".join(beyond) if beyond else "nothing: every change is within what chance gives")
            + "."
        )
    lines.append(RULE)
    return lines


def metric_line(change: MetricChange) -> str:
    """'recall: 0.31 -> 0.62 (+0.31, 95% interval +0.22 to +0.40, 43 answerable questions): better, beyond noise.'"""
    header, over, interval = change.metric.header, change.over, change.interval
    if interval is None:
        return f"{header}: not measured (no {over} scored in both runs)."
    if change.direction == "same":
        return f"{header}: no change over {change.pairs} {over} ({change.mean_a:.2f} in both)."
    detail = f"{interval.diff:+.2f}, 95% interval {interval.low:+.2f} to {interval.high:+.2f}, {change.pairs} {over}"
    if change.p_value is not None:
        detail += f"; McNemar p = {change.p_value:.2g}: {change.gained} went no->yes, {change.lost} yes->no"
    head = f"{header}: {change.mean_a:.2f} -> {change.mean_b:.2f} ({detail}): {change.direction}"
    if change.beyond_noise:
        return f"{head}, beyond noise."
    needed = (
        f"a difference this size needs about {change.needed:,} {over} to show (this set has {change.pairs})"
        if change.needed
        else "too few changes to size a set for it"
    )
    return f"{head} but within noise; {needed}."


def _value(change: MetricChange, value: float | None) -> str:
    if value is None:
        return "-"
    if change.yes_no:
        return "yes" if value else "no"
    return f"{value:.2f}"


def question_table(pair: PairComparison) -> str:
    """The questions that moved, one a row, each moved metric as 'before -> after'."""
    header = ["id", "kind", *(metric.metric.header for metric in pair.metrics)]
    rows = [
        [
            change.id,
            change.kind,
            *(
                f"{_value(metric, change.moved[metric.key][0])} -> {_value(metric, change.moved[metric.key][1])}"
                if metric.key in change.moved
                else ""
                for metric in pair.metrics
            ),
        ]
        for change in pair.changes
    ]
    counts = ["moved", f"{len(pair.changes)} of {pair.questions}"]
    counts += [str(sum(metric.key in change.moved for change in pair.changes)) for metric in pair.metrics]
    return tabulate([*rows, counts], headers=header, tablefmt="pipe", disable_numparse=True)


def metric_table(pair: PairComparison) -> str:
    """Each metric: pairs, both means, the paired difference with its interval, McNemar p, questions needed."""
    rows = []
    for change in pair.metrics:
        interval = change.interval
        rows.append(
            [
                change.metric.header,
                str(change.pairs),
                "" if change.mean_a is None else f"{change.mean_a:.2f}",
                "" if change.mean_b is None else f"{change.mean_b:.2f}",
                "" if interval is None else f"{interval.diff:+.2f}",
                "" if interval is None else f"{interval.low:+.2f} to {interval.high:+.2f}",
                "" if change.p_value is None else f"{change.p_value:.2g}",
                "" if not change.needed else f"{change.needed:,}",
                "beyond noise" if change.beyond_noise else ("no change" if change.direction == "same" else "noise"),
            ]
        )
    header = ["metric", "pairs", "A", "B", "B - A", "95% interval", "McNemar p", "questions needed", "verdict"]
    return tabulate(rows, headers=header, tablefmt="pipe", disable_numparse=True)


def to_text(comparison: RunComparison) -> str:
    """What `rag-eval --compare` prints: per configuration pair the moved questions and metrics, then the summary."""
    parts = []
    for pair in comparison.pairs:
        parts += [
            f"## A: {pair.label_a}  |  B: {pair.label_b}",
            "",
            question_table(pair) if pair.changes else f"No question moved ({pair.questions} compared).",
            "",
            metric_table(pair),
            "",
        ]
    parts += ["## Summary", "", *comparison.summary()]
    return "\n".join(parts) + "\n"


__all__ = ["RULE", "metric_line", "metric_table", "question_table", "summary_lines", "to_text"]
