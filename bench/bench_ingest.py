"""Ingest throughput: `run_ingest` against a bare `SentenceTransformer.encode` of the same texts.

Embedding dominates ingestion, so the honest baseline is the model alone encoding
exactly the chunk texts the pipeline embeds; everything the pipeline adds (hashing,
loading, splitting, sparse vectors, Qdrant writes, the manifest) should cost at most
5% on top (target >= 0.95x). An unchanged re-ingest should cost <= 5% of the first,
since it only hashes files. The plain LangChain recipe (character splitter +
`QdrantVectorStore.from_documents`) is measured the same way against its own texts.
The raw encode runs before and after the pipeline and the mean is the baseline,
because CPU noise on a shared 2-core box moves single runs by several percent.
Model load time is printed separately and counted nowhere.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from common import ROOT, SHARED_NOTE, emit, machine_line, parse_args, table, timed

from chatbot.core.config import Settings
from chatbot.llm.loading import embed_model_name, embed_model_path, embed_token_counter, load_embeddings
from chatbot.rag.store import Store
from ingest.loaders import load_file
from ingest.pipeline import discover_files, run_ingest
from ingest.split import ChunkerSettings, embed_text, split_documents

KBS = {"data/kb": ROOT / "data" / "kb", "shared/kb/plausible": ROOT.parent / "shared" / "kb" / "plausible"}
HEADERS = ("KB", "step", "chunks", "seconds", "chunks/s", "vs raw", "target")


def raw_encode(model: Any, texts: list[str]) -> float:
    """Seconds for the bare sentence-transformers encode, as the pipeline's model would be called."""
    return timed(model.encode, texts, batch_size=32, normalize_embeddings=True)[1]


def load_documents(kb: Path) -> list[Any]:
    """Every document under `kb`, loaded the way the pipeline loads them."""
    files, _, _ = discover_files([kb])
    return [document for item in files for document in load_file(item.path, item.source)]


def langchain_way(kb: Path, embeddings: Any, folder: str) -> list[Any]:
    """The plain LangChain recipe: load, cut by characters, `from_documents` into a local Qdrant."""
    from langchain_qdrant import QdrantVectorStore
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    docs = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=100).split_documents(load_documents(kb))
    store = QdrantVectorStore.from_documents(docs, embedding=embeddings, path=folder, collection_name="lc")
    store.client.close()
    return docs


def bench_kb(name: str, kb: Path, model: Any, embeddings: Any, counter: Any) -> tuple[list[list[str]], list[str]]:
    """Rows for one knowledge base, and notes on what looked off."""
    count_tokens, window = counter
    settings = Settings()
    chunker = ChunkerSettings(chunk_tokens=window - 2)
    texts = [embed_text(chunk) for chunk in split_documents(load_documents(kb), count_tokens, chunker)]
    n = len(texts)
    print(f"[{name}] {n} chunks; raw encode (before)...", flush=True)
    raw_before = raw_encode(model, texts)

    def ingest(store: Store) -> Any:
        return run_ingest(
            [kb],
            store=store,
            load_embeddings=lambda: embeddings,
            embed_model=embed_model_name(settings),
            count_tokens=count_tokens,
            chunker=chunker,
        )

    with tempfile.TemporaryDirectory(prefix="bench-qdrant-") as folder:
        store = Store.open(Settings(qdrant_path=Path(folder)))
        try:
            print(f"[{name}] run_ingest (first, fresh store)...", flush=True)
            first, t_first = timed(ingest, store)
            again, t_again = timed(ingest, store)
            stored = store.count()
        finally:
            store.close()
    print(f"[{name}] raw encode (after)...", flush=True)
    raw_after = raw_encode(model, texts)
    raw = (raw_before + raw_after) / 2

    print(f"[{name}] LangChain recipe...", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-lc-") as folder:
        lc_docs, t_lc = timed(langchain_way, kb, embeddings, folder)
    lc_texts = [doc.page_content for doc in lc_docs]
    lc_raw = (raw_encode(model, lc_texts) + raw_encode(model, lc_texts)) / 2
    m = len(lc_texts)

    def rate(count: int, seconds: float) -> str:
        return f"{count / seconds:.1f}"

    ratio = raw / t_first
    lc_ratio = lc_raw / t_lc
    share = t_again / t_first
    rows = [
        [name, "raw encode, before", n, f"{raw_before:.2f}", rate(n, raw_before), f"{raw / raw_before:.2f}x", ""],
        [name, "raw encode, after", n, f"{raw_after:.2f}", rate(n, raw_after), f"{raw / raw_after:.2f}x", ""],
        [name, "**raw baseline (mean)**", n, f"{raw:.2f}", rate(n, raw), "1.00x", ""],
        [name, "run_ingest, fresh store", first.chunks, f"{t_first:.2f}", rate(first.chunks, t_first),
         f"{ratio:.2f}x", f">= 0.95x {'ok' if ratio >= 0.95 else 'MISSED'}"],
        [name, "run_ingest, unchanged re-run", again.chunks, f"{t_again:.3f}", "",
         f"{share:.1%} of first", f"<= 5% {'ok' if share <= 0.05 else 'MISSED'}"],
        [name, "LangChain raw encode (mean of 2)", m, f"{lc_raw:.2f}", rate(m, lc_raw), "1.00x", ""],
        [name, "LangChain split + from_documents", m, f"{t_lc:.2f}", rate(m, t_lc), f"{lc_ratio:.2f}x", ""],
    ]  # fmt: skip
    notes = []
    if first.chunks != n or stored != n or first.failed:
        notes.append(f"{name}: pipeline embedded {first.chunks} chunks, stored {stored}, expected {n}")
    if again.chunks or len(again.unchanged) != len(first.added):
        notes.append(f"{name}: the re-run was not a no-op ({again.to_json()})")
    spread = abs(raw_before - raw_after) / raw
    notes.append(f"{name}: raw encode before/after differ by {spread:.1%} (noise on this machine).")
    too_long = sum(count_tokens(text) > window - 2 for text in lc_texts)
    if too_long:
        notes.append(
            f"{name}: {too_long} of {m} LangChain chunks exceed the {window}-token window "
            "and are silently truncated by the model (ragtune's chunks never are)."
        )
    return rows, notes


def main() -> None:
    args = parse_args("Ingest throughput vs a bare encode of the same texts.")
    import torch  # imported here so its import time is not inside any measurement
    from sentence_transformers import SentenceTransformer

    settings = Settings()
    model, t_raw_load = timed(SentenceTransformer, str(embed_model_path(settings)), local_files_only=True)
    embeddings, t_lc_load = timed(load_embeddings, settings)
    warm = [f"warm-up sentence number {i} for the embedding model" for i in range(64)]
    model.encode(warm, batch_size=32)
    embeddings.embed_documents(warm)
    counter = embed_token_counter(settings)
    print(f"model load (not counted): SentenceTransformer {t_raw_load:.2f} s, load_embeddings {t_lc_load:.2f} s")

    rows, notes = [], []
    for name, kb in KBS.items():
        if name != "data/kb" and not args.full:
            notes.append(f"{name}: skipped (it takes 5 minutes here; `bench/run.py --full` adds it).")
        elif not kb.is_dir():
            notes.append(f"{name}: skipped ({kb} does not exist).")
        else:
            kb_rows, kb_notes = bench_kb(name, kb, model, embeddings, counter)
            rows += kb_rows
            notes += kb_notes
    for note in notes:
        print(note)

    lines = [
        "## Ingest throughput",
        "",
        f"Machine: {machine_line()}; torch threads {torch.get_num_threads()}.",
        "",
        f"Model load, not counted below: SentenceTransformer {t_raw_load:.2f} s, "
        f"`load_embeddings` {t_lc_load:.2f} s. Both warmed up with a 64-sentence encode.",
        "",
        table(HEADERS, rows),
        "",
        *[f"- {note}" for note in notes],
        f"- {SHARED_NOTE}",
    ]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
