"""Where people and the automatic metrics disagree: the arena's votes read against a question set.

For each vote whose question is in the set, each answer is scored the way `rag-eval`
scores it (`Report.row`: the same refusal test and must-include recall): an
answerable question by its must-include recall (a refusal scores 0), an unanswerable
one by whether the answer refused. The metrics prefer the higher score; people
preferred what they voted (a tie or both-bad prefers neither). A disagreement is a vote
where the two point opposite ways: those are the questions to read, since either the
metric misses what people value or the vote was careless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatbot.eval.questions import Question
from chatbot.eval.report import Report
from chatbot.eval.votes import Outcome, Side, Vote

VERDICTS = ("agree", "disagree", "people only", "metrics only", "neither")


@dataclass(frozen=True)
class Reading:
    """One vote next to the metrics: who each prefers ('a', 'b' or None) and the scores behind the metrics' view."""

    vote: Vote
    question: Question
    measure: str  # "recall" (answerable) or "refusal" (unanswerable)
    score_a: float
    score_b: float

    @property
    def people(self) -> str | None:
        """The side people preferred, or None for a tie or both bad."""
        return {Outcome.A: "a", Outcome.B: "b"}.get(self.vote.outcome)

    @property
    def metrics(self) -> str | None:
        """The side with the better score, or None when the scores are equal."""
        if self.score_a == self.score_b:
            return None
        return "a" if self.score_a > self.score_b else "b"

    @property
    def verdict(self) -> str:
        """agree, disagree, people only (the metrics cannot tell), metrics only (people could not), or neither."""
        if self.people and self.metrics:
            return "agree" if self.people == self.metrics else "disagree"
        if self.people or self.metrics:
            return "people only" if self.people else "metrics only"
        return "neither"

    @property
    def pair(self) -> tuple[str, str]:
        """The two configurations' labels, in a fixed order whatever side each was shown on."""
        return tuple(sorted((self.vote.a.label, self.vote.b.label)))


@dataclass(frozen=True)
class Disagreements:
    """Every vote read against the question set, and how many could not be (question not in the set)."""

    readings: list[Reading]
    unmatched: int

    def by_pair(self) -> dict[tuple[str, str], dict[str, int]]:
        """Per pair of configurations: how many votes of each verdict."""
        table: dict[tuple[str, str], dict[str, int]] = {}
        for reading in self.readings:
            counts = table.setdefault(reading.pair, dict.fromkeys(VERDICTS, 0))
            counts[reading.verdict] += 1
        return table

    def to_json(self) -> dict[str, Any]:
        """A JSON summary: the per-pair table and each disagreeing vote."""
        return {
            "votes": len(self.readings) + self.unmatched,
            "not_in_question_set": self.unmatched,
            "pairs": [{"configurations": list(pair), **counts} for pair, counts in self.by_pair().items()],
            "disagreements": [_shown(reading) for reading in self.readings if reading.verdict == "disagree"],
        }

    def to_markdown(self) -> str:
        """The per-pair table, then one line per disagreeing vote."""
        lines = [
            f"{len(self.readings)} of {len(self.readings) + self.unmatched} votes are on questions of the set.",
            "",
            "| configurations | " + " | ".join(VERDICTS) + " |",
            "| --- | " + " | ".join("---:" for _ in VERDICTS) + " |",
        ]
        for pair, counts in self.by_pair().items():
            lines.append(f"| {' vs '.join(pair)} | " + " | ".join(str(counts[v]) for v in VERDICTS) + " |")
        disagreeing = [_shown(reading) for reading in self.readings if reading.verdict == "disagree"]
        if disagreeing:
            lines += ["", "Where people and the metrics disagree:", ""]
            for item in disagreeing:
                lines.append(
                    f"- {item['question_id']} ({item['measure']}): people preferred '{item['preferred']}' "
                    f"({item['preferred_score']:.2f}) over '{item['other']}' ({item['other_score']:.2f}); "
                    f"vote {item['vote']}"
                )
        else:
            lines += ["", "People and the metrics never point opposite ways on these votes."]
        return "\n".join(lines)


def _shown(reading: Reading) -> dict[str, Any]:
    sides = {"a": (reading.vote.a, reading.score_a), "b": (reading.vote.b, reading.score_b)}
    (won, won_score), (lost, lost_score) = sides[reading.people], sides["b" if reading.people == "a" else "a"]
    return {
        "vote": reading.vote.id,
        "question_id": reading.question.id,
        "question": reading.question.question,
        "measure": reading.measure,
        "preferred": won.label,
        "preferred_score": won_score,
        "other": lost.label,
        "other_score": lost_score,
    }


def disagreements(votes: Sequence[Vote], questions: Sequence[Question]) -> Disagreements:
    """Each vote whose question (by id, else by its text) is in `questions`, read against the metrics."""
    by_id = {question.id: question for question in questions}
    by_text = {_normal(question.question): question for question in questions}
    readings, unmatched = [], 0
    for vote in votes:
        question = by_id.get(vote.question_id or "")
        if question is None or _normal(question.question) != _normal(vote.question):
            question = by_text.get(_normal(vote.question))
        if question is None:
            unmatched += 1
            continue
        measure = "recall" if question.answerable and question.must_include else "refusal"
        scores = [_score(side, question, measure) for side in (vote.a, vote.b)]
        readings.append(Reading(vote, question, measure, *scores))
    return Disagreements(readings, unmatched)


def _score(side: Side, question: Question, measure: str) -> float:
    """The side's answer scored as `rag-eval` scores it: must-include recall, or 1 for the right refusal."""
    config = side.config
    report = Report([question], [config], {(question.id, config): side.result}, {question.id: []})
    row = report.row(question, config)
    if measure == "recall":
        return 0.0 if row["refused"] else row["recall"]
    return float(row["refused"] == (not question.answerable))


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


__all__ = ["Disagreements", "Reading", "disagreements"]
