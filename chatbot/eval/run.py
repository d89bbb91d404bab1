"""Run a question set through a grid of configurations and keep every answer: the engine of `rag-eval`.

The public surface, shared by `rag-eval` and the Streamlit evaluation page:

    questions = load_questions("data/kb_qa.jsonl")        # QuestionSetError names each bad line
    configs = default_configs(engine, axes=("retrieval", "adapter"))
    report = run_evaluation(engine, questions, configs, cache=ResultCache(path), progress=callback)
    write_report(report, "eval-report")                   # {"json": ..., "markdown": ..., "chart": ...}
    report.to_markdown(); report.summary()                # the table; a JSON-able summary

`progress(done, total, config)` is called after every result, cached or not.

Model answers are slow and retrieval is cheap, so the trade is: every answer is
cached the moment it is finished (one JSON line appended), keyed by everything that
could change it (question text, configuration, model and its weights, adapter identity,
collection contents, prompt templates, decoding settings), while retrieval is simply re-run.
A model is known by its weights, not its name: a local model by its folder's weight files
(names, sizes and modification times: hashing gigabytes on every run would cost more than
it saves), a served one by its server and the weights its card names (`root`).
Re-running after adding one question asks the model only about that question, an
interrupted run resumes where it stopped, and re-ingesting changed documents
invalidates what they could have changed. Metrics are computed from the cached raw
answers at report time, so editing `must_include` costs no model call.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.core.errors import AdapterNotFoundError, InvalidOptionError, RagtuneError
from chatbot.eval.questions import Question, check_sources, load_questions
from chatbot.eval.report import Report, Result, write_report
from chatbot.options import AnswerOptions, grid
from chatbot.rag.prompts import Strategy, build_messages, parse_strategy

if TYPE_CHECKING:
    from chatbot.engine import ChatEngine

AXES = ("retrieval", "adapter", "strategy")
CACHE_VERSION = 2  # 2: the model's weights, not only its name
RETRIEVAL_DEPTH = 5
BATCH = 8  # questions generated together; on 2 cores 8 at once took a third of the time of 8 in turn (OpenVINO)
Progress = Callable[[int, int, AnswerOptions], None]


class ResultCache:
    """Finished results as JSON lines in one file, appended one by one so an interrupted run loses none."""

    def __init__(self, path: str | Path, *, read: bool = True) -> None:
        self.path = Path(path)
        self.written = 0  # results added by this process
        self._results: dict[str, Result] = {}
        if read and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the half-written last line of a killed run: that answer is simply asked again
                self._results[item["key"]] = Result.from_json(item["result"])

    def __len__(self) -> int:
        return len(self._results)

    def get(self, key: str) -> Result | None:
        """The cached result for `key`, if any."""
        return self._results.get(key)

    def put(self, key: str, result: Result, about: dict[str, Any] | None = None) -> None:
        """Store a result, on disk at once; `about` (question id and text, configuration) lets a snapshot of
        the cache be compared with another (`rag-eval --compare`) without the engine that made the keys."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as file:
            file.seek(0, 2)
            if file.tell() and not self._ends_with_newline():
                file.write("\n")  # never glue a record onto a killed run's half line
            record = {"key": key, **(about or {}), "result": result.to_json()}
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._results[key] = result
        self.written += 1

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as file:
            file.seek(-1, 2)
            return file.read(1) == b"\n"


def default_configs(
    engine: ChatEngine,
    axes: Sequence[str] = ("retrieval", "adapter"),
    *,
    adapters: Sequence[str] | None = None,
    served_adapters: Sequence[str] | None = None,
    strategies: Sequence[str] | None = None,
) -> list[AnswerOptions]:
    """The grid: every combination of the values of `axes`; an axis left out keeps one value.

    Retrieval varies off/on (fixed: on); adapter varies base + each loaded adapter, or the
    `adapters` (local) and `served_adapters` (on the served model next to a local one) named
    (fixed: the one named, else base); strategy varies over `strategies` or all three (fixed:
    the one named, else zero-shot).
    """
    unknown = [axis for axis in axes if axis not in AXES]
    if unknown:
        raise InvalidOptionError(f"Grid axis {unknown[0]!r} is not one of: {', '.join(AXES)}.")
    named = adapters is not None or served_adapters is not None
    local = _loaded(engine, adapters, served=False, named=named)
    served = _loaded(engine, served_adapters, served=True, named=named)
    if engine.served is not None:  # the served base model is listed by its name: it is no adapter
        served = list(dict.fromkeys(None if name == engine.served.model_name else name for name in served))
    chosen_strategies = [parse_strategy(name) for name in strategies or ()]
    single = _single("adapters", [*(adapters or ()), *(served_adapters or ())]) if "adapter" not in axes else None
    return grid(
        AnswerOptions(
            adapter=single,
            served=single is not None and single not in (adapters or ()),
            strategy=Strategy.ZERO_SHOT
            if "strategy" in axes
            else _single("strategies", chosen_strategies) or "zero-shot",
        ),
        use_retrieval=(False, True) if "retrieval" in axes else None,
        adapters=[None, *local] if "adapter" in axes else None,
        served_adapters=served if "adapter" in axes else (),
        strategies=(chosen_strategies or list(Strategy)) if "strategy" in axes else None,
    )


def _loaded(engine: ChatEngine, wanted: Sequence[str] | None, *, served: bool, named: bool) -> list[str]:
    """The `wanted` adapters on the local (or served) model when adapters are `named`, else every loaded one;
    an error for a wanted one that is not loaded."""
    loaded = [info.name for info in engine.adapters() if info.loaded and info.served == served]
    for name in wanted or ():
        if name not in loaded:
            option = "--served-adapters" if served else "--adapters"
            raise AdapterNotFoundError(
                f"Adapter {name!r} is not loaded; loaded: {', '.join(loaded) or 'none'}. "
                f"Train or register it first (rag-train-adapter), or drop it from {option}."
            )
    return list(wanted or ()) if named else loaded


def _single(option: str, values: Sequence[str] | None) -> str | None:
    if values and len(values) > 1:
        axis = "adapter" if option == "adapters" else "strategy"
        raise InvalidOptionError(
            f"{len(values)} {option} given ({', '.join(values)}) but the {axis} axis is not varied: "
            f"add {axis} to the grid (--grid ...,{axis}) or name one."
        )
    return values[0] if values else None


def run_evaluation(
    engine: ChatEngine,
    questions: Sequence[Question],
    configs: Sequence[AnswerOptions],
    *,
    cache: ResultCache | None = None,
    progress: Progress | None = None,
    question_set: str | Path | None = None,
    batch: int = BATCH,
) -> Report:
    """Answer every question under every configuration (cached answers are reused) and return the report.

    Questions go to the engine `batch` at a time (`ChatEngine.answer_many`): a runtime that batches generates
    them together, and each answer's latency is then its share of the batch's time.
    """
    store = engine.store
    known = set(store.stored_sources()) | {entry["source"] for entry in store.manifest().values()}
    check_sources(questions, known, collection=store.collection, path=question_set)
    identity = run_identity(engine)
    retrieved = {q.id: _retrieved_sources(engine, q.question) for q in questions if q.answerable}
    results: dict[tuple[str, AnswerOptions], Result] = {}
    done, total, reused = 0, len(questions) * len(configs), 0
    for config in configs:
        context = {
            **identity,
            "config": config.to_json(),
            "adapter": adapter_identity(engine, config.adapter, served=config.served),
        }
        context["prompt"] = prompt_hash(engine, config)
        keys = {question.id: result_key(question.question, context) for question in questions}
        for start in range(0, len(questions), batch):
            chunk = questions[start : start + batch]
            found = {q.id: cache.get(keys[q.id]) for q in chunk} if cache is not None else {}
            missing = [q for q in chunk if found.get(q.id) is None]
            reused += len(chunk) - len(missing)
            for question, result in zip(missing, _ask(engine, missing, config), strict=True):
                found[question.id] = result
                if cache is not None:
                    about = {"id": question.id, "question": question.question, "config": config.to_json()}
                    cache.put(keys[question.id], result, about)
            for question in chunk:
                results[(question.id, config)] = found[question.id]
                done += 1
                if progress is not None:
                    progress(done, total, config)
    info = {
        "question_set": str(question_set) if question_set else None,
        "model": identity["model"],
        "collection": identity["collection"],
        "settings": identity["decoding"],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return Report(list(questions), list(configs), results, retrieved, info, reused)


def _ask(engine: ChatEngine, questions: Sequence[Question], config: AnswerOptions) -> list[Result]:
    """The results of `questions` under `config`, generated together; each one's seconds are the batch's share."""
    if not questions:
        return []
    started = time.perf_counter()
    try:
        answers = engine.answer_many([q.question for q in questions], config)
    except RagtuneError as error:
        # Same error class, so the CLI still reports it in one line, now naming the questions.
        lines = ", ".join(f"{q.id} (line {q.line})" for q in questions)
        raise type(error)(f"Question {lines}, {config.label}: {error}") from error
    seconds = (time.perf_counter() - started) / len(questions)
    return [Result.from_answer(answer, seconds) for answer in answers]


def _retrieved_sources(engine: ChatEngine, question: str) -> list[str]:
    hits = engine.retriever.retrieve(question, k=max(RETRIEVAL_DEPTH, engine.retriever.top_k))
    return [hit.source for hit in hits]


def run_identity(engine: ChatEngine) -> dict[str, Any]:
    """What every answer of this run depends on: model, collection contents, retrieval and decoding settings."""
    store = engine.store
    manifest = store.manifest()
    retriever, model = engine.retriever, engine.chat_model
    return {
        "version": CACHE_VERSION,
        "model": engine.model_name,
        "weights": model.identity(),  # two models may share a name: a served and a local one, two folders
        "collection": {
            "name": store.collection,
            "fingerprint": store.fingerprint(),
            # By source, not by path: a moved or re-cloned knowledge base keeps its cached answers.
            "sources_hash": _digest(sorted((entry["source"], entry.get("hash")) for entry in manifest.values())),
            "chunks": store.count(),
        },
        "decoding": {
            "top_k": retriever.top_k,
            "mode": str(retriever.mode),
            "mmr": retriever.mmr,
            "score_threshold": retriever.score_threshold,
            "abstain_threshold": engine.abstain_threshold,
            "prompt_tokens": engine.prompt_tokens,
            "max_new_tokens": model.max_new_tokens,
            "temperature": model.temperature,
            "repetition_penalty": model.repetition_penalty,
        },
    }


def adapter_identity(engine: ChatEngine, name: str | None, *, served: bool = False) -> str | None:
    """What tells two adapters of one name apart: the card's creation time, else its files' hash, else the name.

    A served adapter is known by its server and the weights the server lists for it.
    """
    if served and name is None:
        name = engine.served.model_name  # the served base, beside a local model
    if name is None:
        return None
    info = next((info for info in engine.adapters() if (info.name, info.served) == (name, served)), None)
    if info is not None and (served_by := info.card.served_by):
        server = engine.served if served else engine.chat_model
        return f"{name}@{served_by} " + json.dumps(server.served_root(name))
    if info is not None and (created := info.card.created):
        # Set after training (adapters/training/calibrate.py): it changes the answers.
        bias = info.card.first_token_bias
        return f"{name}@{created}" + (f" bias {json.dumps(bias, sort_keys=True)}" if bias else "")
    folder = info.path if info is not None else None
    if folder and Path(folder).is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            digest.update(file.relative_to(folder).as_posix().encode() + b"\0" + file.read_bytes())
        return f"{name}#{digest.hexdigest()[:16]}"
    return name


def prompt_hash(engine: ChatEngine, config: AnswerOptions) -> str:
    """A hash of the prompt templates and examples one configuration renders (an edited template re-asks)."""
    messages = build_messages(
        "{question}",
        [],
        strategy=config.strategy,
        examples=engine.examples,
        use_retrieval=config.use_retrieval,
    )
    return _digest([[message.type, str(message.content)] for message in messages])


def result_key(question: str, context: dict[str, Any]) -> str:
    """The cache key of one question's answer under one configuration and run identity."""
    return _digest({"question": question, **context})


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


__all__ = [
    "AXES",
    "AnswerOptions",
    "Question",
    "Report",
    "Result",
    "ResultCache",
    "default_configs",
    "load_questions",
    "run_evaluation",
    "write_report",
]
