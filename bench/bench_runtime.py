"""The local generator on OpenVINO GenAI against the transformers runtime, in one run.

Four measurements, each with the transformers runtime (f32, PEFT) as the baseline:
1. end-to-end RAG answers through `ChatEngine` (sample questions, retrieval on, the shipped
   adapter on, greedy): wall seconds per answer over the same questions, answers' lengths shown;
2. TTFT and decode speed at ~1,500-token prompts of sample-KB passages (adapter on), with
   OpenVINO's f32 and int8 weights; llama.cpp's 61 tok/s (4-bit, same model and cores, measured
   by the issue's author) is the outside reference;
Every timed prompt differs from the others after the system prompt, so OpenVINO's prefix cache
saves only what a user's questions share (the system prompt), and never a whole repeated prompt.
3. the per-call adapter switch on OpenVINO: 1-token calls alternating adapter/base against calls
   that keep one;
4. the engine's cold start with every cache in place: a fresh process to `build_engine` done;
5. parity: the share of data/kb_qa.jsonl questions whose greedy answer on OpenVINO f32 is the
   transformers runtime's text, word for word, with the adapter and without.
The engines are built as `build_engine` builds them (`chatbot.build._local_chat_model`).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_generation import one_run, sized_prompt
from common import ROOT, SAMPLE_QA, SHARED_NOTE, emit, ingest_sample_kb, machine_line, parse_args, sample_chunks, table
from langchain_core.messages import HumanMessage

from chatbot.build import _local_chat_model
from chatbot.core.config import Settings
from chatbot.engine import ChatEngine
from chatbot.llm.loading import generator_source, load_embeddings
from chatbot.llm.ov_export import ensure_export
from chatbot.rag.prompts import Examples
from chatbot.rag.retrieval import Retriever

ADAPTER = "support-rag"
BASELINE = "transformers f32"
LLAMA_CPP_TOK_S = 61.0
RUNTIMES = {
    "transformers f32": {"llm_runtime": "transformers"},
    "OpenVINO f32": {"llm_runtime": "openvino", "llm_weights": "f32"},
    "OpenVINO int8": {"llm_runtime": "openvino", "llm_weights": "int8"},
}


def chat_model(settings: Settings, overrides: dict[str, str]) -> tuple[Any, float]:
    """The local chat model on one runtime, and its load seconds (exports are made before timing)."""
    runtime_settings = replace(settings, **overrides)
    if runtime_settings.llm_runtime == "openvino":  # the one-off export stays out of the load time
        ensure_export(settings.cache_dir, generator_source(settings)[1], runtime_settings.llm_weights)
    started = time.perf_counter()
    model, _ = _local_chat_model(runtime_settings)
    return model, time.perf_counter() - started


def questions(limit: int | None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in SAMPLE_QA.read_text().splitlines() if line.strip()]
    return rows[:limit]


def engine_answers(engine: ChatEngine, rows: list[dict], adapter: str | None) -> list[Any]:
    return [engine.answer(row["question"], adapter=adapter) for row in rows]


def cold_start(overrides: dict[str, str], qdrant: Path) -> float:
    """Seconds from a new process to a built engine (imports included), with every cache already made."""
    env_lines = "".join(f"os.environ['RAG_{key.upper()}'] = {value!r}\n" for key, value in overrides.items())
    code = (
        "import os, time\nstarted = time.perf_counter()\n"
        + env_lines
        + f"os.environ['RAG_QDRANT_PATH'] = {str(qdrant)!r}\n"
        + "from chatbot import Settings, build_engine\n"
        + "engine = build_engine(Settings.from_env())\n"
        + "print(time.perf_counter() - started)\nengine.close()\n"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    return max(wall, float(done.stdout.strip().splitlines()[-1]))


def switch_cost(chat: Any, calls: int) -> dict[str, float]:
    """Median wall seconds of a 1-token call with the adapter kept off, kept on, or alternating."""
    messages = [HumanMessage("Hi")]
    sequences = {"off": [None] * calls, "on": [ADAPTER] * calls, "alternating": [None, ADAPTER] * (calls // 2)}
    chat.invoke(messages, max_new_tokens=1)
    costs = {}
    for name, adapters in sequences.items():
        seconds = []
        for adapter in adapters:
            started = time.perf_counter()
            chat.invoke(messages, adapter=adapter, max_new_tokens=1)
            seconds.append(time.perf_counter() - started)
        costs[name] = statistics.median(seconds)
    return costs


def speed(models: dict, engines: dict, runs: int, calls: int, folder: Path, embeddings: Any) -> list[str]:
    """The end-to-end, decode, adapter-switch and cold-start tables (markdown lines)."""
    warm_up, *asked = [row["question"] for row in questions(None) if row.get("source")][: 2 * runs + 1]
    print("end to end...", flush=True)
    e2e: dict[str, list[float]] = {label: [] for label in engines}
    lengths: dict[str, list[int]] = {label: [] for label in engines}
    for engine in engines.values():
        engine.answer(warm_up, adapter=ADAPTER)
    for question in asked:  # interleaved, so load drifting on a shared machine falls on all alike
        for label, engine in engines.items():
            started = time.perf_counter()
            answer = engine.answer(question, adapter=ADAPTER)
            e2e[label].append(time.perf_counter() - started)
            lengths[label].append(answer.usage.get("output_tokens", 0))

    print("decode at long prompts...", flush=True)
    base_chat = models[BASELINE][0]
    chunks = sample_chunks()
    long_prompts = [  # the passages start at another chunk in each: prompts share only the system prompt
        sized_prompt(base_chat, 1500, warm_up, chunks[run * 7 :] + chunks[: run * 7]) for run in range(runs + 1)
    ]
    found: dict[str, list[tuple]] = {label: [] for label in models}
    for model, _ in models.values():
        one_run(model, long_prompts[0], adapter=ADAPTER, max_new_tokens=64)  # warm-up
    for long_prompt in long_prompts[1:]:
        for label, (model, _) in models.items():
            found[label].append(one_run(model, long_prompt, adapter=ADAPTER, max_new_tokens=64))
    decode = {label: tuple(statistics.median(v) for v in zip(*values, strict=True)) for label, values in found.items()}

    print("adapter switching on OpenVINO...", flush=True)
    switching = switch_cost(models["OpenVINO f32"][0], calls)

    print("cold starts...", flush=True)
    qdrant = folder / "cold"
    ingest_sample_kb(qdrant, embeddings).close()
    cold = {label: cold_start(overrides, qdrant) for label, overrides in RUNTIMES.items()}

    base_seconds = sum(e2e[BASELINE])
    e2e_rows = [
        [label, f"{sum(values) / len(values):.2f}", f"{sum(lengths[label]) / len(values):.0f}",
         f"{base_seconds / sum(values):.2f}x"]
        for label, values in e2e.items()
    ]  # fmt: skip
    decode_rows = [
        [label, f"{ttft * 1e3:.0f}", f"{rate:.1f}", f"{rate / decode[BASELINE][1]:.2f}x", f"{rate / LLAMA_CPP_TOK_S:.2f}x",
         f"{models[label][1]:.2f}", f"{cold[label]:.1f}"]
        for label, (ttft, rate, _, _) in decode.items()
    ]  # fmt: skip
    constant = (switching["off"] + switching["on"]) / 2
    return [
        f"End to end: `ChatEngine.answer` on the {len(asked)} answerable data/kb_qa.jsonl questions after "
        f"{warm_up!r} (the warm-up), retrieval on, adapter {ADAPTER}, greedy, max_new_tokens 160: mean wall seconds "
        "and output tokens per answer; speed = total seconds against the transformers runtime's.",
        "",
        table(("runtime", "seconds per answer", "output tokens", "speed vs transformers"), e2e_rows),
        "",
        f"Decode: {runs} prompts of ~{base_chat.count_tokens(long_prompts[1])} tokens, sample-KB passages in another "
        f"order each, adapter on, 64 new tokens, median; llama.cpp: {LLAMA_CPP_TOK_S:.0f} tok/s (4-bit weights). "
        "OpenVINO decodes by prompt lookup (several tokens a pass where the answer quotes the prompt): tok/s counts the "
        "tokens delivered. Load: the chat model with its adapters, export cached. Cold start: a new process importing "
        "ragtune and running `build_engine` with every cache in place.",
        "",
        table(
            ("runtime", "TTFT ms", "decode tok/s", "vs transformers", "vs llama.cpp", "load s", "cold start s"),
            decode_rows,
        ),
        "",
        f"Adapter switch on OpenVINO ({calls} 1-token calls each, prompt 'Hi', median ms per call): kept off "
        f"{switching['off'] * 1e3:.1f}, kept on {switching['on'] * 1e3:.1f}, alternating "
        f"{switching['alternating'] * 1e3:.1f}: switching costs {(switching['alternating'] - constant) * 1e3:+.1f} ms "
        "a call over the mean of the constant two.",
    ]


def parity(engines: dict, limit: int | None) -> list[str]:
    """The parity table: OpenVINO f32's greedy answers against the transformers runtime's (markdown lines)."""
    print("parity on data/kb_qa.jsonl...", flush=True)
    rows = questions(limit)
    found = {}
    for adapter in (ADAPTER, None):
        reference = engine_answers(engines[BASELINE], rows, adapter)
        started = time.perf_counter()
        answers = engine_answers(engines["OpenVINO f32"], rows, adapter)
        seconds = time.perf_counter() - started
        same = sum(a.text == b.text for a, b in zip(reference, answers, strict=True))
        found[adapter or "base"] = (same, len(rows), seconds)
    table_rows = [
        [name, f"{same}/{total} ({same / total:.0%})", f"{seconds / total:.2f}"]
        for name, (same, total, seconds) in found.items()
    ]
    subset = f"the first {limit} questions of " if limit else ""
    return [
        "Parity: greedy answers of `ChatEngine.answer` (retrieval on, zero-shot) on OpenVINO f32 equal to the "
        f"transformers runtime's, word for word, over {subset}data/kb_qa.jsonl; seconds per answer on OpenVINO.",
        "",
        table(("adapter", "same text", "OpenVINO s/answer"), table_rows),
    ]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], parts=("speed", "parity"))
    runs, parity_limit, calls = (1, 6, 6) if args.quick else (3, None, 20)
    parts = args.only or ["speed", "parity"]
    settings = Settings()
    embeddings = load_embeddings(settings)
    lines = ["## Runtimes: OpenVINO GenAI vs transformers", "", f"Machine: {machine_line()}.", ""]
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as folder:
        store = ingest_sample_kb(Path(folder), embeddings)
        wanted = RUNTIMES if "speed" in parts else {k: RUNTIMES[k] for k in (BASELINE, "OpenVINO f32")}
        models = {}
        for label, overrides in wanted.items():
            print(f"loading {label}...", flush=True)
            models[label] = chat_model(settings, overrides)
        engines = {
            label: ChatEngine(Retriever(store, embeddings, top_k=settings.top_k), model, examples=Examples.load())
            for label, (model, _) in models.items()
        }
        if "speed" in parts:
            lines += [*speed(models, engines, runs, calls, Path(folder), embeddings), ""]
        if "parity" in parts:
            lines += [*parity(engines, parity_limit), ""]
        store.close()  # the engines share it
    emit("\n".join([*lines, f"- {SHARED_NOTE}"]), args.out)


if __name__ == "__main__":
    main()
