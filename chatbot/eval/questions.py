"""Question sets: read a DESIGN.md jsonl file and check it, all before any model runs.

Every problem is reported with its line number, and all of them at once, so a long
evaluation never dies on question 40 of a typo that was visible on line 40 from the
start. A question's `source` must be a document the collection holds: a set written
for another knowledge base (or a collection not yet ingested) would otherwise score
every retrieval as a miss and look like a bad retriever.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.core.errors import QuestionSetError

KINDS = ("fact", "howto", "troubleshoot", "multi-hop", "unanswerable")
FIELDS = ("id", "question", "answer", "must_include", "source", "kind")
SHOWN_PROBLEMS = 10


@dataclass(frozen=True)
class Question:
    """One line of a question set; `sources` is empty when the knowledge base cannot answer it."""

    id: str
    question: str
    answer: str
    must_include: tuple[str, ...]
    sources: tuple[str, ...]
    kind: str
    line: int = 0

    @property
    def answerable(self) -> bool:
        """Whether the knowledge base holds the answer (the question names a source)."""
        return bool(self.sources)


def load_questions(path: str | Path) -> list[Question]:
    """The questions of a jsonl question set, or a `QuestionSetError` naming every bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise QuestionSetError(
            f"Question set {path} does not exist: pass a .jsonl file such as data/kb_qa.jsonl."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise QuestionSetError(f"Question set {path} cannot be read ({error}): pass a UTF-8 .jsonl file.") from None
    questions: list[Question] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            question = _parse_line(line, number)
        except ValueError as problem:
            problems.append((number, str(problem)))
            continue
        if question.id in seen:
            problems.append(
                (number, f"id {question.id!r} is already used on line {seen[question.id]}: ids must be unique")
            )
            continue
        seen[question.id] = number
        questions.append(question)
    if problems:
        raise QuestionSetError(_describe(path, problems))
    if not questions:
        raise QuestionSetError(f"Question set {path} holds no questions: write one JSON object per line.")
    return questions


def _parse_line(line: str, number: int) -> Question:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"not valid JSON ({error.msg} at column {error.colno}): write one JSON object per line"
        ) from None
    if not isinstance(item, dict):
        raise ValueError(f"expected a JSON object, found {type(item).__name__}")
    missing = [name for name in FIELDS if name not in item]
    if missing:
        raise ValueError(f"missing {', '.join(map(repr, missing))} (every line needs {', '.join(FIELDS)})")
    for name in ("id", "question"):
        if not isinstance(item[name], str) or not item[name].strip():
            raise ValueError(f"{name!r} must be a non-empty string, found {item[name]!r}")
    if not isinstance(item["answer"], str):
        raise ValueError(f"'answer' must be a string, found {item['answer']!r}")
    must_include = item["must_include"]
    if not isinstance(must_include, list) or not all(isinstance(term, str) and term for term in must_include):
        raise ValueError(f"'must_include' must be a list of non-empty strings, found {must_include!r}")
    sources = _sources(item["source"])
    kind = item["kind"]
    if kind not in KINDS:
        raise ValueError(f"'kind' is {kind!r}: expected one of {', '.join(KINDS)}")
    if (kind == "unanswerable") != (not sources):
        raise ValueError(
            f"'kind' is {kind!r} but 'source' is {item['source']!r}: a question the knowledge base cannot "
            "answer has kind 'unanswerable' and source null, every other question names its source"
        )
    return Question(item["id"], item["question"], item["answer"], tuple(must_include), sources, kind, number)


def _sources(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(path, str) and path for path in value):
        return tuple(value)
    raise ValueError(f"'source' must be a path, a non-empty list of paths or null, found {value!r}")


def _describe(path: Path, problems: Sequence[tuple[int, str]]) -> str:
    if len(problems) == 1:
        number, problem = problems[0]
        return f"{path}, line {number}: {problem}."
    shown = [f"  line {number}: {problem}" for number, problem in problems[:SHOWN_PROBLEMS]]
    if len(problems) > SHOWN_PROBLEMS:
        shown.append(f"  ... and {len(problems) - SHOWN_PROBLEMS} more")
    return f"{path}: {len(problems)} bad lines in the question set:\n" + "\n".join(shown)


def check_sources(
    questions: Iterable[Question], known: Iterable[str], *, collection: str, path: str | Path | None = None
) -> None:
    """Raise `QuestionSetError` naming each line whose source the collection does not hold."""
    known = sorted(set(known))
    unknown = [(q.line, source) for q in questions for source in q.sources if source not in known]
    if not unknown:
        return
    where = f"{path}: " if path else ""
    if not known:
        raise QuestionSetError(
            f"{where}collection '{collection}' holds no documents, so no source can be checked: "
            "run `rag-ingest DIR` on the knowledge base first (or set RAG_COLLECTION)."
        )
    lines = []
    for number, source in unknown[:SHOWN_PROBLEMS]:
        close = difflib.get_close_matches(source, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        lines.append(f"  line {number}: {source!r}{hint}")
    if len(unknown) > SHOWN_PROBLEMS:
        lines.append(f"  ... and {len(unknown) - SHOWN_PROBLEMS} more")
    raise QuestionSetError(
        f"{where}{len(unknown)} source(s) are not in collection '{collection}' ({len(known)} documents, "
        f"e.g. {known[0]!r}):\n" + "\n".join(lines) + "\nWrong collection (set RAG_COLLECTION)? Or run "
        "`rag-ingest DIR` on the folder holding them; sources are paths relative to that folder."
    )


__all__ = ["KINDS", "Question", "check_sources", "load_questions"]
