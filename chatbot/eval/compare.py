"""Run against run: which questions moved between two evaluation runs, by how much, and whether it is noise.

    a, b = load_run("runs/before"), load_run("runs/after")          # report folders (or cache snapshots)
    comparison = compare_runs(a, b)                                  # every configuration the two share
    comparison = compare_runs(a, a, configs=("rag, base", "rag, X")) # or two configurations, one of each
    comparison.summary(); comparison.to_json()

Questions are paired by id (and must have the same text), configurations by label. Each of
the five answer metrics is scored per question as the report scores it; a metric that does
not apply to a question (recall on an unanswerable one, groundedness of a refusal) leaves that
question out of that metric's pairs. The statistics are in `chatbot.eval.stats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatbot.core.text import word_diff
from chatbot.eval.metrics import METRICS, Metric
from chatbot.eval.runs import CompareError, Run, load_run
from chatbot.eval.stats import (
    ALPHA,
    PAIRED_MEANS,
    PAIRED_PROPORTIONS,
    Interval,
    mcnemar_exact,
    paired_bootstrap,
    questions_for_means,
    questions_for_proportions,
)

COMPARED = ("recall", "refusal_acc", "false_refusal", "hit@5", "grounded")
YES_NO = {"refusal_acc", "false_refusal", "hit@5"}
OVER = {  # which questions each metric is measured on
    "recall": "answerable questions",
    "refusal_acc": "unanswerable questions",
    "false_refusal": "answerable questions",
    "hit@5": "answerable questions",
    "grounded": "questions both answered from passages",
}
# Groundedness is a share of words, so almost every rewording moves it a little; a question counts as moved on
# it only from a tenth of the answer's words. The statistics still use every pair.
MIN_MOVE = {"grounded": 0.1}
_BY_KEY = {metric.key: metric for metric in METRICS}


def scores(row: dict[str, Any]) -> dict[str, float | None]:
    """One report row's value of each compared metric (None where it does not apply)."""
    answerable = row["kind"] != "unanswerable"
    return {
        "recall": row.get("recall"),
        "refusal_acc": None if answerable else float(row["refused"]),
        "false_refusal": float(row["refused"]) if answerable else None,
        "hit@5": float(row["retrieval_rank"] is not None) if "retrieval_rank" in row else None,
        "grounded": row.get("grounded"),
    }


@dataclass(frozen=True)
class QuestionChange:
    """One question whose metrics moved: both answers and the (before, after) value of each metric that moved."""

    id: str
    kind: str
    question: str
    answer_a: str
    answer_b: str
    moved: dict[str, tuple[float | None, float | None]]

    @property
    def diff(self) -> str:
        """The word diff from answer A to answer B."""
        return word_diff(self.answer_a, self.answer_b)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "question": self.question,
            "moved": {key: list(values) for key, values in self.moved.items()},
            "answer_a": self.answer_a,
            "answer_b": self.answer_b,
            "diff": self.diff,
        }


@dataclass(frozen=True)
class MetricChange:
    """One metric over the paired questions: both means, the paired difference and how sure it is."""

    key: str
    pairs: int
    mean_a: float | None
    mean_b: float | None
    interval: Interval | None
    gained: int | None  # yes/no metrics: questions that went no -> yes
    lost: int | None  # and yes -> no
    p_value: float | None  # exact McNemar, yes/no metrics only
    needed: int | None  # questions to tell a difference this size apart at 80% power

    @property
    def metric(self) -> Metric:
        return _BY_KEY[self.key]

    @property
    def over(self) -> str:
        """Which questions the metric is measured on, in words."""
        return OVER[self.key]

    @property
    def yes_no(self) -> bool:
        return self.key in YES_NO

    @property
    def beyond_noise(self) -> bool:
        """McNemar p < 0.05 for a yes/no metric; the interval excluding 0 for a share."""
        if self.p_value is not None:
            return self.p_value < ALPHA
        return self.interval is not None and self.interval.excludes_zero

    @property
    def direction(self) -> str:
        """'better', 'worse' or 'same' from A to B, by which way the metric is better."""
        if self.interval is None or self.interval.diff == 0:
            return "same"
        return "better" if (self.interval.diff > 0) == (self.metric.better == "high") else "worse"

    def to_json(self) -> dict[str, Any]:
        interval = self.interval
        return {
            "metric": self.key,
            "header": self.metric.header,
            "over": self.over,
            "pairs": self.pairs,
            "a": _round(self.mean_a),
            "b": _round(self.mean_b),
            "diff": _round(interval and interval.diff),
            "low": _round(interval and interval.low),
            "high": _round(interval and interval.high),
            "gained": self.gained,
            "lost": self.lost,
            "p_value": _round(self.p_value),
            "beyond_noise": self.beyond_noise,
            "direction": self.direction,
            "questions_needed": self.needed,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True)
class PairComparison:
    """Configuration `label_a` of run A against `label_b` of run B, over the questions both answered."""

    label_a: str
    label_b: str
    questions: int
    changes: list[QuestionChange]
    metrics: list[MetricChange]

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.label_a,
            "b": self.label_b,
            "questions": self.questions,
            "moved": len(self.changes),
            "metrics": [metric.to_json() for metric in self.metrics],
            "changes": [change.to_json() for change in self.changes],
        }


def compare_pair(rows_a: dict[str, dict], rows_b: dict[str, dict], ids: list[str]) -> tuple[list, list]:
    """The questions that moved and each metric's paired statistics, over `ids`."""
    changes, values = [], {key: [] for key in COMPARED}
    for qid in ids:
        row_a, row_b = rows_a[qid], rows_b[qid]
        score_a, score_b = scores(row_a), scores(row_b)
        # A metric that applies on one side only (groundedness of a new refusal) has not moved: it went away,
        # and the refusal that made it go away is the change that shows.
        both = [key for key in COMPARED if score_a[key] is not None and score_b[key] is not None]
        moved = {
            key: (score_a[key], score_b[key])
            for key in both
            if score_a[key] != score_b[key] and abs(score_b[key] - score_a[key]) >= MIN_MOVE.get(key, 0)
        }
        for key in both:
            values[key].append((score_a[key], score_b[key]))
        if moved:
            changes.append(
                QuestionChange(qid, row_a["kind"], row_a["question"], row_a["answer"], row_b["answer"], moved)
            )
    return changes, [measure(key, values[key]) for key in COMPARED]


def measure(key: str, pairs: list[tuple[float, float]]) -> MetricChange:
    """One metric's paired statistics over its (A, B) value pairs."""
    if not pairs:
        return MetricChange(key, 0, None, None, None, None, None, None, None)
    before, after = [a for a, _ in pairs], [b for _, b in pairs]
    n = len(pairs)
    interval = paired_bootstrap(before, after)
    if key in YES_NO:
        gained = sum(a == 0 and b == 1 for a, b in pairs)
        lost = sum(a == 1 and b == 0 for a, b in pairs)
        p_value = mcnemar_exact(gained, lost)
        needed = questions_for_proportions(gained / n, lost / n)
    else:
        gained = lost = p_value = None
        needed = questions_for_means([b - a for a, b in pairs])
    return MetricChange(key, n, sum(before) / n, sum(after) / n, interval, gained, lost, p_value, needed)


@dataclass(frozen=True)
class RunComparison:
    """Every compared configuration pair, and what could not be paired."""

    a: str
    b: str
    pairs: list[PairComparison]
    questions: int  # questions in both runs
    only_a: list[str]
    only_b: list[str]
    text_differs: list[str]
    unmatched_a: list[str]  # configurations of A with no namesake in B (compared by label only)
    unmatched_b: list[str]

    def notes(self) -> list[str]:
        """What was left out, in words."""
        notes = []
        if self.only_a or self.only_b:
            notes.append(
                f"The runs cover different question sets: compared the {self.questions} in both, dropped "
                f"{len(self.only_a)} only in A and {len(self.only_b)} only in B."
            )
        if self.text_differs:
            notes.append(
                f"Dropped {len(self.text_differs)} questions whose id is in both but whose text differs: "
                + ", ".join(self.text_differs[:10])
            )
        for side, labels in (("A", self.unmatched_a), ("B", self.unmatched_b)):
            if labels:
                notes.append(f"Configurations only in {side} (not compared): " + "; ".join(labels))
        return notes

    def summary(self) -> list[str]:
        """The comparison in words: per configuration pair, which changes are beyond noise and what a set would need."""
        from chatbot.eval.wording import summary_lines  # the wording is long; kept apart from the arithmetic

        return summary_lines(self)

    def to_json(self) -> dict[str, Any]:
        """The `rag-eval --compare --json` object."""
        return {
            "a": self.a,
            "b": self.b,
            "questions": self.questions,
            "dropped": {"only_a": self.only_a, "only_b": self.only_b, "text_differs": self.text_differs},
            "unmatched_configs": {"a": self.unmatched_a, "b": self.unmatched_b},
            "power": {"alpha": ALPHA, "power": 0.8, "yes_no": PAIRED_PROPORTIONS, "shares": PAIRED_MEANS},
            "pairs": [pair.to_json() for pair in self.pairs],
            "notes": self.notes(),
            "summary": self.summary(),
        }


def resolve(run: Run, label: str, side: str) -> str:
    """The configuration of `run` named `label`, or the one label that contains it ('support-rag', 'base model')."""
    if label in run.rows:
        return label
    matches = [name for name in run.labels if label.casefold() in name.casefold()]
    if len(matches) == 1:
        return matches[0]
    found = f"{len(matches)} match it" if matches else "it has"
    raise CompareError(
        f"Configuration {label!r} is not one of {side}'s ({run.path}); {found}: "
        + "; ".join(matches or run.labels)
        + ". Give a label, or a part of exactly one."
    )


def compare_runs(a: Run, b: Run, *, configs: tuple[str, str] | None = None) -> RunComparison:
    """Compare run `b` against run `a`: the configurations they share by label, or the two `configs` named."""
    if configs is not None:
        configs = (resolve(a, configs[0], "A"), resolve(b, configs[1], "B"))
        labels = [configs]
    else:
        labels = [(label, label) for label in a.labels if label in b.rows]
        if a.path == b.path:
            raise CompareError(
                f"Both runs are {a.path}: to compare two of its configurations, name them with "
                '--configs "LABEL A" "LABEL B"; it has: ' + "; ".join(a.labels)
            )
        if not labels:
            raise CompareError(
                "The runs share no configuration: A has "
                + "; ".join(a.labels)
                + " and B has "
                + "; ".join(b.labels)
                + '. Name one of each with --configs "LABEL A" "LABEL B".'
            )
    questions_a = {qid: row["question"] for rows in a.rows.values() for qid, row in rows.items()}
    questions_b = {qid: row["question"] for rows in b.rows.values() for qid, row in rows.items()}
    common = [qid for qid in questions_a if qid in questions_b]
    same = [qid for qid in common if questions_a[qid] == questions_b[qid]]
    if not same:
        raise CompareError(f"{a.path} and {b.path} have no question in common (paired by id and text).")
    pairs = []
    for label_a, label_b in labels:
        rows_a, rows_b = a.rows[label_a], b.rows[label_b]
        ids = [qid for qid in same if qid in rows_a and qid in rows_b]
        changes, metrics = compare_pair(rows_a, rows_b, ids)
        pairs.append(PairComparison(label_a, label_b, len(ids), changes, metrics))
    chosen_a, chosen_b = {label for label, _ in labels}, {label for _, label in labels}
    return RunComparison(
        a=a.path,
        b=b.path,
        pairs=pairs,
        questions=len(same),
        only_a=[qid for qid in questions_a if qid not in questions_b],
        only_b=[qid for qid in questions_b if qid not in questions_a],
        text_differs=[qid for qid in common if questions_a[qid] != questions_b[qid]],
        unmatched_a=[] if configs else [label for label in a.labels if label not in chosen_a],
        unmatched_b=[] if configs else [label for label in b.labels if label not in chosen_b],
    )


__all__ = [
    "COMPARED",
    "CompareError",
    "MetricChange",
    "PairComparison",
    "QuestionChange",
    "RunComparison",
    "compare_runs",
    "load_run",
    "scores",
]
