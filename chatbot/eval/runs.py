"""Finished evaluation runs read back for comparison: a `rag-eval --out` folder, or a snapshot of the answer cache.

A report folder already holds every per-question row (report.json's `rows`), so it is read
as it is. A cache snapshot (a copy of `$RAG_CACHE_DIR/eval/results.jsonl`) holds raw answers
only, so it is scored here against the question set, through the same `Report.row` as a
report; entries written before the cache recorded each answer's question and configuration
cannot be placed and are skipped. A cache keeps no retrieval of its own: hit@5 is taken from
the passages each answer was given (the retriever's top k), which is what the report's
retrieval measures too when k is at least 5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbot.core.errors import RagtuneError
from chatbot.eval.questions import Question
from chatbot.eval.report import Report, Result
from chatbot.options import AnswerOptions


class CompareError(RagtuneError):
    """Two runs that cannot be compared as asked (not a report, nothing in common, an unknown configuration)."""


@dataclass(frozen=True)
class Run:
    """One run's per-question rows, by configuration label then question id, in the run's order."""

    path: str
    rows: dict[str, dict[str, dict[str, Any]]]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """The configurations, in the run's order."""
        return list(self.rows)


def load_run(path: str | Path, questions: list[Question] | None = None) -> Run:
    """A report folder (or its report.json), or a cache snapshot (a .jsonl file, scored against `questions`)."""
    path = Path(path)
    if path.is_dir() and (path / "report.json").is_file():
        return _from_report(path / "report.json", shown=path)
    if path.is_file() and path.name.endswith(".json"):
        return _from_report(path, shown=path)
    if path.is_file() and path.name.endswith(".jsonl"):
        if questions is None:
            raise CompareError(
                f"{path} is an answer cache: give the question set it was run on too, "
                f"e.g. rag-eval data/kb_qa.jsonl --compare {path} OTHER."
            )
        return _from_cache(path, questions)
    if not path.exists():
        raise CompareError(f"{path} does not exist: give a folder written by rag-eval --out DIR, or a cache snapshot.")
    raise CompareError(
        f"{path} is not an evaluation report: it holds no report.json. Write one with "
        "`rag-eval QA.jsonl --out DIR`, or give a copy of $RAG_CACHE_DIR/eval/results.jsonl (a .jsonl file)."
    )


def _from_report(file: Path, *, shown: Path) -> Run:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CompareError(
            f"{file} cannot be read as a report ({error}): write it again with rag-eval --out."
        ) from error
    needed = ("id", "config", "kind", "question", "answer", "refused")
    rows_ok = isinstance(data, dict) and isinstance(data.get("rows"), list)
    if not rows_ok or not all(isinstance(row, dict) and all(key in row for key in needed) for row in data["rows"]):
        raise CompareError(
            f"{file} is not a rag-eval report.json (per-question `rows` missing or incomplete): write it again with "
            "rag-eval QA.jsonl --out DIR."
        )
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for row in data["rows"]:
        rows.setdefault(row["config"], {})[str(row["id"])] = row
    info = {key: data.get(key) for key in ("question_set", "model", "date", "collection")}
    return Run(str(shown), rows, info)


def _from_cache(file: Path, questions: list[Question]) -> Run:
    by_id = {question.id: question for question in questions}
    latest: dict[tuple[str, AnswerOptions], Result] = {}
    skipped = 0
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # a killed run's half line
        question = by_id.get(str(item.get("id")))
        if "config" not in item or question is None or item.get("question") != question.question:
            skipped += 1  # older entries (no question recorded), other sets, or since-edited questions
            continue
        latest[(question.id, AnswerOptions.from_json(item["config"]))] = Result.from_json(item["result"])
    if not latest:
        raise CompareError(
            f"{file} holds no answer to a question of this set recorded with its question and configuration "
            f"({skipped} entries skipped: written by an older ragtune, or for other questions). "
            "Run rag-eval QA.jsonl --out DIR and compare the report folders."
        )
    configs = list(dict.fromkeys(config for _, config in latest))
    answered = [q for q in questions if any((q.id, config) in latest for config in configs)]
    retrieved = {q.id: _given(latest, q.id, configs) for q in answered if q.answerable}
    report = Report(answered, configs, latest, retrieved)
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for config in configs:
        for question in answered:
            if (question.id, config) in latest:
                rows.setdefault(config.label, {})[question.id] = report.row(question, config)
    return Run(str(file), rows, {"cache_entries_skipped": skipped})


def _given(results: dict[tuple[str, AnswerOptions], Result], question_id: str, configs: list[AnswerOptions]) -> list:
    """The passages one question's answers were given with retrieval on (the same for every adapter)."""
    for config in configs:
        result = results.get((question_id, config))
        if config.use_retrieval and result is not None:
            return [source for source, _ in result.sources]
    return []


__all__ = ["CompareError", "Run", "load_run"]
