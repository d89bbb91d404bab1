"""What an evaluation produced, and how it is shown: `Report`, its Markdown table and chart.

A `Report` keeps the raw results (answer text, the passages each answer was given,
timings) and computes every metric from them when asked, so a changed `must_include`
list or a better metric re-scores old answers without asking the model again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.eval.metrics import (
    METRICS,
    RETRIEVAL_KEYS,
    first_rank,
    groundedness,
    mean,
    own_citations,
    percentile,
    retrieval_scores,
    term_recall,
)
from chatbot.eval.questions import KINDS, Question
from chatbot.eval.render import draw_chart, markdown
from chatbot.options import AnswerOptions
from chatbot.rag.postprocess import cited_numbers, is_refusal

if TYPE_CHECKING:
    from chatbot.engine import Answer

REPORT_VERSION = 1


@dataclass(frozen=True)
class Result:
    """What one `engine.answer` call returned, reduced to what the metrics need; cached as JSON."""

    text: str
    sources: tuple[tuple[str, str], ...]  # (source path, passage text) of each passage given, numbered from 1
    abstained: bool
    citations_added: tuple[int, ...]
    output_tokens: int | None
    latency: float
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_answer(cls, answer: Answer, latency: float) -> Result:
        """The result of one answer that took `latency` seconds."""
        return cls(
            text=answer.text,
            sources=tuple((hit.source, hit.text) for hit in answer.sources),
            abstained=answer.abstained,
            citations_added=tuple(answer.citations_added),
            output_tokens=answer.usage.get("output_tokens"),
            latency=latency,
            timings=dict(answer.timings),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON object that `from_json` reads back."""
        return {
            "text": self.text,
            "sources": [list(pair) for pair in self.sources],
            "abstained": self.abstained,
            "citations_added": list(self.citations_added),
            "output_tokens": self.output_tokens,
            "latency": self.latency,
            "timings": self.timings,
        }

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Result:
        """The result `to_json` wrote."""
        return cls(
            text=item["text"],
            sources=tuple((source, text) for source, text in item["sources"]),
            abstained=item["abstained"],
            citations_added=tuple(item["citations_added"]),
            output_tokens=item["output_tokens"],
            latency=item["latency"],
            timings=dict(item["timings"]),
        )


@dataclass(frozen=True)
class Report:
    """Every question's result under every configuration, plus the facts that make the run reproducible."""

    questions: list[Question]
    configs: list[AnswerOptions]
    results: dict[tuple[str, AnswerOptions], Result]  # (question id, configuration) -> result
    retrieved: dict[str, list[str]]  # answerable question id -> sources of its top passages, best first
    info: dict[str, Any] = field(default_factory=dict)  # model, collection, question_set, date, settings
    cached: int = 0  # how many results came from the cache

    def row(self, question: Question, config: AnswerOptions) -> dict[str, Any]:
        """One question under one configuration: the answer and its per-answer scores."""
        result = self.results[(question.id, config)]
        passages = [text for _, text in result.sources]
        refused = result.abstained or is_refusal(result.text)
        own = own_citations(result.text, result.citations_added)
        cited = [n for n in cited_numbers(result.text) if 1 <= n <= len(result.sources)]
        recall = term_recall("" if result.abstained else result.text, question.must_include)
        row = {
            "id": question.id,
            "kind": question.kind,
            "config": config.label,
            "question": question.question,
            "expected_sources": list(question.sources),
            "answer": result.text,
            "sources": [source for source, _ in result.sources],
            "refused": refused,
            "abstained": result.abstained,
            "recall": recall if question.answerable else None,
            "grounded": None if refused or not config.use_retrieval else groundedness(result.text, passages),
            "citations": own,
            "citations_added": list(result.citations_added),
            "cite_valid": all(1 <= n <= len(result.sources) for n in own) if own else None,
            "cite_source": any(result.sources[n - 1][0] in question.sources for n in cited)
            if cited and question.answerable
            else None,
            "latency": round(result.latency, 4),
            "output_tokens": result.output_tokens,
            "timings": {name: round(seconds, 4) for name, seconds in result.timings.items()},
        }
        if config.use_retrieval and question.answerable:
            row["retrieval_rank"] = first_rank(self.retrieved[question.id][:5], question.sources)
        return row

    def rows(self) -> list[dict[str, Any]]:
        """Every question under every configuration, configuration by configuration."""
        return [self.row(question, config) for config in self.configs for question in self.questions]

    def metrics(self, config: AnswerOptions) -> dict[str, float | None]:
        """The `METRICS` of one configuration (None where a metric does not apply)."""
        rows = [self.row(question, config) for question in self.questions]
        answerable = [row for row in rows if row["kind"] != "unanswerable"]
        checks = [retrieval_scores(self.retrieved[q.id], q.sources) for q in self.questions if q.answerable]
        latencies = [self.results[(q.id, config)].latency for q in self.questions]
        values: dict[str, float | None] = {
            key: mean(check[key] for check in checks) if config.use_retrieval else None for key in RETRIEVAL_KEYS
        }
        values |= {
            "recall": mean(row["recall"] for row in answerable),
            "refusal_acc": mean(row["refused"] for row in rows if row["kind"] == "unanswerable"),
            "false_refusal": mean(row["refused"] for row in answerable),
            "grounded": mean(row["grounded"] for row in rows),
            "cite_valid": mean(row["cite_valid"] for row in rows),
            "cite_source": mean(row["cite_source"] for row in answerable),
            "latency_p50": percentile(latencies, 0.5),
            "latency_p95": percentile(latencies, 0.95),
            "tokens": mean(row["output_tokens"] for row in rows),
        }
        return values

    def recall_by_kind(self, config: AnswerOptions) -> dict[str, float | None]:
        """Must-include recall of one configuration per question kind (answerable kinds present)."""
        kinds = [kind for kind in KINDS if any(q.kind == kind and q.answerable for q in self.questions)]
        rows = [self.row(question, config) for question in self.questions]
        return {kind: mean(row["recall"] for row in rows if row["kind"] == kind) for kind in kinds}

    def summary(self) -> dict[str, Any]:
        """The `rag-eval --json` object: run facts and each configuration's metrics."""
        answerable = sum(q.answerable for q in self.questions)
        return {
            "version": REPORT_VERSION,
            **self.info,
            "questions": len(self.questions),
            "answerable": answerable,
            "unanswerable": len(self.questions) - answerable,
            "results_cached": self.cached,
            "configs": [{**config.to_json(), "metrics": _rounded(self.metrics(config))} for config in self.configs],
        }

    def to_json(self) -> dict[str, Any]:
        """The report.json object: the summary, how each metric is computed, and every row."""
        return {
            **self.summary(),
            "metric_definitions": {metric.key: metric.how for metric in METRICS},
            "rows": self.rows(),
        }

    def to_markdown(self) -> str:
        """A table a person reads in ten seconds: one row per configuration, the best value per metric in bold."""
        return markdown(self)


def _rounded(values: dict[str, float | None]) -> dict[str, float | None]:
    return {key: None if value is None else round(value, 4) for key, value in values.items()}


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and report.png into `out_dir`; return their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "chart": out / "report.png"}
    paths["json"].write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(report.to_markdown(), encoding="utf-8")
    draw_chart(report, paths["chart"])
    return paths


__all__ = ["Report", "Result", "write_report"]
