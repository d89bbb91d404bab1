"""The embedder's two routes: torch (sentence-transformers) against OpenVINO (`RAG_EMBED_BACKEND`).

The OpenVINO route exists to make a cold `rag-search` cheap: it embeds the query
with `openvino` + `tokenizers` + numpy, so the process never imports torch. It is
only worth keeping if its vectors are the torch ones (min cosine >= 0.999) and it
does not slow ingest. So, in one run and against the torch route measured in that
same run: a cold `rag-search` as a fresh process (what a user scripting it pays),
one query's embedding, ingest-sized `embed_documents` over data/kb's chunks, and
the lowest cosine between the two routes' vectors over those chunks and the
questions of data/kb_qa.jsonl. The export (a one-off, cached) is timed on its own.
Store and cache live in a temp folder: the project's `.ragtune` is untouched.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, SAMPLE_QA, SHARED_NOTE, emit, ingest_sample_kb, machine_line, parse_args, sample_chunks, table

from chatbot.core.config import Settings
from chatbot.llm.embed_openvino import ensure_export
from chatbot.llm.loading import embed_model_path, load_embeddings

ROUTES = ("torch", "openvino")
QUERY = "how long do refunds take"
HEADERS = ("measure", "torch", "openvino", "openvino vs torch")


def all_questions() -> list[str]:
    """Every question of data/kb_qa.jsonl, unanswerable ones too (they are queries all the same)."""
    return [json.loads(line)["question"] for line in SAMPLE_QA.read_text().splitlines() if line.strip()]


def cold_search(route: str, qdrant: Path, cache: Path) -> float:
    """Wall seconds of one `rag-search` run as a fresh process on `route`."""
    env = {**os.environ, "RAG_QDRANT_PATH": str(qdrant), "RAG_CACHE_DIR": str(cache), "RAG_EMBED_BACKEND": route}
    command = [sys.executable, "-m", "chatbot.cli.search", QUERY, "--k", "2"]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def per_query_ms(embeddings: Any, questions: list[str]) -> float:
    """Median milliseconds of one `embed_query`."""
    seconds = []
    for question in questions:
        started = time.perf_counter()
        embeddings.embed_query(question)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000


def texts_per_second(embeddings: Any, texts: list[str], repeats: int) -> float:
    """Best throughput of `embed_documents` over all of `texts`, as ingest calls it."""
    best = min(_timed_documents(embeddings, texts) for _ in range(repeats))
    return len(texts) / best


def _timed_documents(embeddings: Any, texts: list[str]) -> float:
    started = time.perf_counter()
    embeddings.embed_documents(texts)
    return time.perf_counter() - started


def main() -> None:
    args = parse_args("The embedder on torch against OpenVINO: cold rag-search, query latency, throughput, cosine.")
    repeats = 1 if args.quick else 3
    texts = [chunk.page_content for chunk in sample_chunks()]
    questions = all_questions()

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as folder:
        cache, qdrant = Path(folder) / "cache", Path(folder) / "qdrant"
        started = time.perf_counter()
        ensure_export(cache, embed_model_path(Settings()))
        t_export = time.perf_counter() - started
        print(f"OpenVINO export (once) {t_export:.1f} s; loading both routes...", flush=True)
        routes = {route: load_embeddings(Settings(cache_dir=cache, embed_backend=route)) for route in ROUTES}
        ingest_sample_kb(qdrant, routes["openvino"]).close()

        print(f"cold rag-search x{repeats} per route (after one discarded run each)...", flush=True)
        cold: dict[str, list[float]] = {route: [] for route in ROUTES}
        for route in ROUTES:
            cold_search(route, qdrant, cache)  # page cache warm for both, as for a user's second call
        for _ in range(repeats):
            for route in ROUTES:  # interleaved, so a burst of load elsewhere hits both
                cold[route].append(cold_search(route, qdrant, cache))

        print(f"embedding {len(questions)} queries and {len(texts)} chunks per route...", flush=True)
        vectors, query_ms, throughput = {}, {}, {}
        for route, embeddings in routes.items():
            embeddings.embed_documents(texts[:32])  # warm-up
            query_ms[route] = per_query_ms(embeddings, questions)
            throughput[route] = texts_per_second(embeddings, texts, repeats)
            vectors[route] = np.array(
                embeddings.embed_documents(texts) + [embeddings.embed_query(q) for q in questions]
            )
    cosines = (vectors["torch"] * vectors["openvino"]).sum(axis=1)  # both normalised

    def row(name: str, values: dict[str, float], unit: str, higher_is_better: bool) -> list[str]:
        ratio = values["openvino"] / values["torch"]
        word = "faster" if (ratio > 1) == higher_is_better else "slower"
        shown = ratio if higher_is_better else 1 / ratio
        return [name, f"{values['torch']:.2f} {unit}", f"{values['openvino']:.2f} {unit}", f"{shown:.2f}x {word}"]

    best = {route: min(times) for route, times in cold.items()}
    median = {route: statistics.median(times) for route, times in cold.items()}
    rows = [
        row(f"**cold `rag-search`, wall** (best of {repeats})", best, "s", higher_is_better=False),
        row(f"cold `rag-search`, wall (median of {repeats})", median, "s", higher_is_better=False),
        row(f"one query embedded (median of {len(questions)})", query_ms, "ms", higher_is_better=False),
        row(f"ingest: `embed_documents`, {len(texts)} chunks (best of {repeats})", throughput, "texts/s", True),
    ]
    lines = [
        "## Embedder: torch vs OpenVINO",
        "",
        f"Machine: {machine_line()}; openvino {_version('openvino')}.",
        "",
        table(HEADERS, rows),
        "",
        f"- Same vectors: min cosine {cosines.min():.8f} (mean {cosines.mean():.8f}) over {len(texts)} chunks "
        f"of data/kb and {len(questions)} questions (needs >= 0.999).",
        f"- The OpenVINO export is made once per model under `RAG_CACHE_DIR` ({t_export:.1f} s here, it imports "
        "torch); every later process reuses it.",
        f"- Cold `rag-search` is `python -m chatbot.cli.search {QUERY!r} --k 2` as a new process on a local "
        "store of data/kb, page cache warm.",
        f"- {SHARED_NOTE}",
    ]
    emit("\n".join(lines), args.out)
    if cosines.min() < 0.999:
        raise SystemExit(f"OpenVINO vectors differ from torch's: min cosine {cosines.min():.6f} < 0.999")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
