"""Query latency of `Retriever.retrieve`, dense against hybrid, from the sample KB to 50k chunks (default engine).

A question waits for retrieval before the model can start, so its latency is paid on
every answer. Two timings per mode: the whole `retrieve` (query embedding + search +
hits), and search alone (the same call with the query vectors computed beforehand).
The baseline is dense search over the sample KB (data/kb, ingested as `rag-ingest`
does it), measured in the same run. The larger collections are synthetic: random unit
dense vectors and keyword vectors of text drawn from the sample KB's own word
frequencies. Search cost depends on how many points there are, not on what they mean,
so the real queries (data/kb_qa.jsonl) time the same work a real KB that size would
cost. Building them is kept out of the timings and reported on its own.
"""

from __future__ import annotations

import re
import tempfile
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    SHARED_NOTE,
    emit,
    ingest_sample_kb,
    machine_line,
    parse_args,
    sample_chunks,
    sample_questions,
    table,
    timed,
)
from langchain_core.embeddings import Embeddings

from chatbot.core.config import Settings
from chatbot.llm.loading import load_embeddings
from chatbot.rag.retrieval import RetrievalMode, Retriever
from chatbot.rag.sparse import document_vector
from chatbot.rag.store import ChunkPoint, Store

DIM = 384  # all-MiniLM-L6-v2, the bundled embedding model
K = 4
QUERIES = 30
BATCH = 256  # points per upsert while building a synthetic collection
HEADERS = ("collection", "points", "mode", "timed", "p50 ms", "p95 ms", "p50 vs dense @ sample")


class FixedEmbeddings(Embeddings):
    """Query vectors computed beforehand, so `retrieve` times everything but the embedding model."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def embed_query(self, text: str) -> list[float]:
        return self.vectors[text]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[text] for text in texts]


def latencies(retriever: Retriever, queries: list[str], mode: RetrievalMode, passes: int) -> list[float]:
    """Seconds per `retrieve` call, every query `passes` times, after a short warm-up."""
    for query in queries[:3]:
        retriever.retrieve(query, k=K, mode=mode)
    seconds = []
    for _ in range(passes):
        for query in queries:
            hits, elapsed = timed(retriever.retrieve, query, k=K, mode=mode)
            if not hits:
                raise RuntimeError(f"{mode} retrieval found nothing for {query!r}")
            seconds.append(elapsed)
    return seconds


def word_frequencies(chunks: list[Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """The sample KB's words, how often each occurs (as probabilities), and the mean words per chunk."""
    counts = Counter(word for chunk in chunks for word in re.findall(r"\w+", chunk.page_content.lower()))
    words = np.array(list(counts))
    frequency = np.array(list(counts.values()), dtype=float)
    mean_words = round(sum(counts.values()) / len(chunks))
    return words, frequency / frequency.sum(), mean_words


def add_synthetic(store: Store, start: int, stop: int, chunks: list[Any]) -> tuple[float, float]:
    """Upsert synthetic points number `start` to `stop`; seconds spent making them, and upserting them."""
    rng = np.random.default_rng(start)  # seeded per range: the same points in every run
    words, probabilities, mean_words = word_frequencies(chunks)
    if not store.exists():
        store.create({"embed_model": "synthetic: random unit vectors", "dim": DIM})
    making = upserting = 0.0
    for first in range(start, stop, BATCH):
        began = time.perf_counter()
        dense = rng.standard_normal((min(BATCH, stop - first), DIM))
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        batch = []
        for number, vector in enumerate(dense, first):
            length = int(rng.integers(mean_words // 2, mean_words * 3 // 2))
            text = " ".join(rng.choice(words, size=length, p=probabilities))
            page = number // 8
            payload = {"source": f"synthetic/page-{page:05d}.md", "title": f"Page {page}", "section": "", "text": text}
            batch.append(ChunkPoint(str(uuid.UUID(int=number + 1)), vector.tolist(), document_vector(text), payload))
        made = time.perf_counter()
        store.upsert(batch)
        making, upserting = making + made - began, upserting + time.perf_counter() - made
    return making, upserting


def measure(
    name: str, store: Store, embeddings: Embeddings, fixed: FixedEmbeddings, queries: list[str], passes: int
) -> list[tuple[str, int, str, str, list[float]]]:
    """(name, points, mode, timed, seconds) for both modes, with and without the query embedding."""
    points = store.count()
    results = []
    for mode in RetrievalMode:
        for label, model in (("embed + search", embeddings), ("search only", fixed)):
            print(f"[{name}] {mode.value}, {label}...", flush=True)
            seconds = latencies(Retriever(store, model), queries, mode, passes)
            results.append((name, points, mode.value, label, seconds))
    return results


def main() -> None:
    args = parse_args("Retrieval latency, dense vs hybrid, sample KB to 50k chunks.")
    sizes = [10_000] if args.quick else [10_000, 50_000]
    passes = 3 if args.full else 1
    # 20 questions, one pass: `make bench` stays well under 15 minutes here
    queries = sample_questions(QUERIES if args.full else QUERIES * 2 // 3)
    embeddings = load_embeddings(Settings())
    fixed = FixedEmbeddings(dict(zip(queries, embeddings.embed_documents(queries), strict=True)))
    if {len(vector) for vector in fixed.vectors.values()} != {DIM}:
        raise RuntimeError(f"the embedding model does not give {DIM}-d vectors; the synthetic points would not match")
    chunks = sample_chunks()
    embed_alone = float(np.percentile([timed(embeddings.embed_query, query)[1] for query in queries], 50))

    results, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench-qdrant-") as folder:
        store, t_ingest = timed(ingest_sample_kb, Path(folder), embeddings)
        print(f"sample KB ingested: {store.count()} chunks in {t_ingest:.1f} s (not timed below)", flush=True)
        try:
            results += measure("sample (data/kb)", store, embeddings, fixed, queries, passes)
        finally:
            store.close()
    # One synthetic collection, grown from one size to the next: the 50k holds the 10k's points.
    with tempfile.TemporaryDirectory(prefix="bench-qdrant-") as folder:
        store = Store.open(Settings(qdrant_path=Path(folder)), "synthetic")
        try:
            for start, size in zip([0, *sizes], sizes, strict=False):
                name = f"synthetic {size // 1000}k"
                print(f"[{name}] adding {size - start:,} points...", flush=True)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    making, upserting = add_synthetic(store, start, size, chunks)
                notes.append(
                    f"{name}: {size - start:,} points added in {making + upserting:.1f} s, not timed "
                    f"(making vectors and payloads {making:.1f} s; `Store.upsert` {upserting:.1f} s, "
                    f"{(size - start) / upserting:.0f} points/s in batches of {BATCH})."
                )
                notes += sorted({f"{name}: qdrant-client warned: {w.message}" for w in caught})
                results += measure(name, store, embeddings, fixed, queries, passes)
        finally:
            store.close()

    p50 = {(name, mode, label): float(np.percentile(s, 50)) for name, _, mode, label, s in results}
    rows = [
        [name, f"{points:,}", mode, label, f"{p50[(name, mode, label)] * 1e3:.1f}",
         f"{np.percentile(seconds, 95) * 1e3:.1f}",
         f"{p50[(name, mode, label)] / p50[('sample (data/kb)', 'dense', label)]:.2f}x"]
        for name, points, mode, label, seconds in results
    ]  # fmt: skip
    for row in rows[:2]:  # dense over the sample KB, embedded and not: the baselines
        row[-1] = "**1.00x (baseline)**"
    largest = results[-1][0]
    growth = p50[(largest, "hybrid", "search only")] / p50[(largest, "dense", "search only")]
    excess = {
        name: p50[(name, "dense", "embed + search")] - p50[(name, "dense", "search only")] - embed_alone
        for name, *_ in results
    }
    lines = [
        "## Retrieval latency",
        "",
        f"Machine: {machine_line()}.",
        "",
        f"{len(queries)} questions from data/kb_qa.jsonl, k={K}, {passes} pass(es) each after a 3-query warm-up "
        f"({len(queries) * passes} timings per row). Sample KB ingest: {t_ingest:.1f} s, not counted. "
        "Ratios compare each row's p50 with dense over the sample KB, timed the same way.",
        "",
        table(HEADERS, rows),
        "",
        *[f"- {note}" for note in notes],
        "- The store is the default engine, Qdrant Edge (HNSW and a sparse inverted index, in-process); "
        "bench_store.py compares it with qdrant-client's local mode, which scores every point in Python.",
        f"- At {largest} hybrid search costs {growth:.1f}x dense search.",
        f"- The query embedding alone takes {embed_alone * 1e3:.1f} ms (p50). Dense embed + search exceeds embed "
        "alone + search alone by "
        + ", ".join(f"{ms * 1e3:+.1f} ms ({name})" for name, ms in excess.items())
        + ": torch's and numpy's (OpenBLAS) thread pools contend for the cores when one follows the other "
        "(`OPENBLAS_NUM_THREADS=1` removed most of it when tried by hand at 10k).",
        f"- {SHARED_NOTE}",
    ]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
