"""The embedded vector store, Qdrant Edge against qdrant-client's local mode, in one run on this machine.

What a user of the embedded default pays: hybrid query latency with the query embedding
included (what a question waits for), search alone, `Store.upsert` throughput while a
collection is built (and Edge's one-off index build after it, `Store.optimize`), and the
time to reopen the folder (what the app pays at start). Points are synthetic, as in
bench_retrieval: random unit 384-d vectors and keyword vectors of text drawn from the sample
KB's word frequencies; the queries are real questions, embedded by the bundled model.
Local mode scores every point in Python and upserts a few hundred points a second past
10k, so it is measured at 10k only (also 50k with --full); ratios compare the two engines at
the same size, local mode as the baseline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from bench_retrieval import FixedEmbeddings, add_synthetic, latencies
from common import SHARED_NOTE, emit, machine_line, parse_args, sample_chunks, sample_questions, table, timed

from chatbot.core.config import Settings
from chatbot.llm.loading import load_embeddings
from chatbot.rag.retrieval import RetrievalMode, Retriever
from chatbot.rag.store import Store

HEADERS = (
    "engine",
    "points",
    "hybrid p50 ms (embed + search)",
    "hybrid p50 ms (search)",
    "dense p50 ms (search)",
    "upserts/s",
    "index build s",
    "reopen s",
)


def measure(engine: str, size: int, queries: list[str], embeddings, fixed: FixedEmbeddings, chunks) -> dict:
    """Build `size` synthetic points on `engine` in a fresh folder and time it, reopen it and query it."""
    with tempfile.TemporaryDirectory(prefix=f"bench-store-{engine}-") as folder:
        settings = Settings(qdrant_path=Path(folder), qdrant_engine=engine)
        store = Store.open(settings, "synthetic")
        print(f"[{engine} {size:,}] adding points...", flush=True)
        _, upserting = add_synthetic(store, 0, size, chunks)
        _, optimizing = timed(store.optimize)
        store.close()
        store, reopen = timed(reopened, settings)
        try:
            row = {"engine": engine, "points": size, "upserts": size / upserting, "optimize": optimizing}
            row["reopen"] = reopen
            print(f"[{engine} {size:,}] querying...", flush=True)
            for key, model, mode in (
                ("hybrid_embed", embeddings, RetrievalMode.HYBRID),
                ("hybrid_search", fixed, RetrievalMode.HYBRID),
                ("dense_search", fixed, RetrievalMode.DENSE),
            ):
                row[key] = float(np.percentile(latencies(Retriever(store, model), queries, mode, 1), 50))
        finally:
            store.close()
    return row


def reopened(settings: Settings) -> Store:
    """The collection opened again, with its points loaded (a count touches them)."""
    store = Store.open(settings, "synthetic")
    store.count()
    return store


def main() -> None:
    args = parse_args("Qdrant Edge vs local mode: query latency, upserts/s, reopen time.")
    edge_sizes = [10_000] if args.quick else [10_000, 100_000]
    local_sizes = [10_000, 50_000] if args.full else [10_000]
    queries = sample_questions(20)
    embeddings = load_embeddings(Settings())
    fixed = FixedEmbeddings(dict(zip(queries, embeddings.embed_documents(queries), strict=True)))
    chunks = sample_chunks()
    rows = [measure("local", size, queries, embeddings, fixed, chunks) for size in local_sizes]
    rows += [measure("edge", size, queries, embeddings, fixed, chunks) for size in edge_sizes]

    local = {row["points"]: row for row in rows if row["engine"] == "local"}
    cells = []
    for row in rows:
        base = local.get(row["points"]) if row["engine"] == "edge" else None

        def shown(key: str, scale: float, fmt: str, *, higher_is_better: bool = False, base=base, row=row) -> str:
            text = format(row[key] * scale, fmt)
            if base is not None and row[key] and base[key]:
                ratio = row[key] / base[key] if higher_is_better else base[key] / row[key]
                text += f" ({ratio:.0f}x {'more' if higher_is_better else 'faster'})"
            return text

        cells.append(
            [
                row["engine"],
                f"{row['points']:,}",
                shown("hybrid_embed", 1e3, ".1f"),
                shown("hybrid_search", 1e3, ".2f"),
                shown("dense_search", 1e3, ".2f"),
                shown("upserts", 1, ",.0f", higher_is_better=True),
                f"{row['optimize']:.1f}",
                f"{row['reopen']:.2f}",
            ]
        )
    lines = [
        "## Vector store: Qdrant Edge vs local mode",
        "",
        f"Machine: {machine_line()}.",
        "",
        f"{len(queries)} questions from data/kb_qa.jsonl, k=4, one pass after a 3-query warm-up. Synthetic points "
        "(random unit 384-d vectors, keyword vectors of sample-KB words). Ratios: Edge against local mode at the "
        "same size, measured in this run; local mode is measured only up to "
        f"{max(local_sizes):,} points (it scores every point in Python).",
        "",
        table(HEADERS, cells),
        "",
        "- upserts/s is `Store.upsert` alone, in batches of 256; *index build* is `Store.optimize` after the "
        "bulk write (Edge's HNSW; rag-ingest runs it once at the end of a run; local mode has no index).",
        "- reopen: `Store.open` on the folder after `close`, then a count (what the app pays at start).",
        f"- {SHARED_NOTE}",
    ]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
