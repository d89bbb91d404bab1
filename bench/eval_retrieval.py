"""Retrieval quality, before and after, on the tuning and held-out halves of two knowledge bases.

Each knowledge base is ingested exactly as `rag-ingest` does it (the bundled
all-MiniLM-L6-v2, chunks of the model's window), into a temporary local Qdrant
folder (or `--store DIR`, which makes re-runs skip the embedding). Its chunks are
then copied into two in-memory collections that differ only in their keyword
vectors: words (the default) and Snowball stems (`stem=True`), so *before* (the
previous defaults: RRF of the dense and keyword lists, no per-page cap,
abstention at the constant cosine 0.40), *after* (today's defaults, abstention
at the collection's calibrated cut) and the alternatives of the sweep are
measured on the same chunks and vectors in the same run.

Questions come from the question sets listed in bench/eval/splits.json, split
once into a tuning half and a held-out half (bench/split_questions.py). A
question counts as answerable when its `source` is set; a multi-source question
scores a hit when *any* of its sources is in the top k, and all@5 says how often
*every* one is. Abstention: share of unanswerable questions whose best cosine in
the top k is below the cut (refused before generating: higher is better), and
share of answerable ones below it (wrongly refused: lower is better).
`--sweep` prints the grid the defaults were chosen from, on the tuning halves only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import ROOT, SHARED_NOTE, emit, machine_line, table
from qdrant_client import QdrantClient

from chatbot.core.config import Settings
from chatbot.core.errors import FingerprintMismatchError
from chatbot.core.text import heading_path
from chatbot.engine import ABSTAIN_THRESHOLD
from chatbot.llm.loading import load_embeddings
from chatbot.rag import abstain, sparse
from chatbot.rag.retrieval import FUSION, KEYWORD_WEIGHT, PER_SOURCE, Fusion, Hit, RetrievalMode, Retriever
from chatbot.rag.store import ChunkPoint, Store
from ingest.pipeline import ingest_paths

K = 5
SPLITS = ROOT / "bench" / "eval" / "splits.json"
SHARED_KB = next(
    (path for path in (ROOT.parent / "shared" / "kb", ROOT.parent.parent / "shared" / "kb") if path.is_dir()),
    ROOT.parent / "shared" / "kb",
)
KBS = {"data/kb": ROOT / "data" / "kb", "plausible": SHARED_KB / "plausible"}
HALVES = ("tune", "heldout")


@dataclass(frozen=True)
class Question:
    """One line of a question set, reduced to what retrieval is judged on."""

    id: str
    text: str
    sources: tuple[str, ...]  # empty: the knowledge base cannot answer it


@dataclass(frozen=True)
class Config:
    """One way to retrieve: which keyword vectors, fusion, weight, per-page cap; and how abstention cuts."""

    name: str
    keywords: str  # "words" (the default vectors) or "stemmed" (`sparse.document_vector(..., stem=True)`)
    mode: RetrievalMode = RetrievalMode.HYBRID
    fusion: Fusion = FUSION
    weight: float = KEYWORD_WEIGHT
    per_source: int | None = PER_SOURCE
    calibrated: bool = True  # False: the constant ABSTAIN_THRESHOLD


BEFORE = Config("before", "words", fusion=Fusion.RRF, weight=1.0, per_source=None, calibrated=False)
AFTER = Config("after", "words")
DENSE = Config("dense only", "words", mode=RetrievalMode.DENSE, per_source=None, calibrated=False)


def load_questions(kb: str) -> dict[str, list[Question]]:
    """The KB's questions per half, as bench/eval/splits.json assigns them."""
    split = json.loads(SPLITS.read_text())[kb]
    questions = {}
    for file in split["files"]:
        for line in (ROOT / file).read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                source = item["source"]
                sources = () if source is None else (source,) if isinstance(source, str) else tuple(source)
                questions[item["id"]] = Question(item["id"], item["question"], sources)
    return {half: [questions[qid] for qid in split[half]] for half in HALVES}


class CachedEmbeddings:
    """The real embedder, remembering each question's vector: the sweep asks the same questions many times."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.cache = inner, {}

    def embed_query(self, text: str) -> list[float]:
        if text not in self.cache:
            self.cache[text] = self.inner.embed_query(text)
        return self.cache[text]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_documents(texts)


@dataclass
class Collection:
    """A KB's chunks in two in-memory stores (keyword vectors of words, and of stems), and its headings."""

    stores: dict[str, Store]
    headings: list[tuple[str, str]]
    cuts: dict[float, float]  # alpha -> calibrated cut


def build_collection(kb: Path, folder: Path, embeddings: Any, settings: Settings) -> Collection:
    """Ingest as `rag-ingest` does, then copy the chunks into one in-memory store per keyword scheme."""
    store = Store.open(Settings(qdrant_path=folder))
    try:
        try:
            report = ingest_paths([kb], settings, store=store, embeddings=embeddings.inner)
        except FingerprintMismatchError:  # a --store folder from an older version: rebuild it
            report = ingest_paths([kb], settings, store=store, embeddings=embeddings.inner, recreate=True)
        print(f"{kb.name}: {store.count()} chunks ({report.chunks} embedded, {report.seconds:.0f} s)", flush=True)
        points, offset = [], None
        while True:
            batch, offset = store.client.scroll(
                store.collection, limit=1000, offset=offset, with_payload=True, with_vectors=["dense"]
            )
            points += batch
            if offset is None:
                break
        fingerprint = store.fingerprint()
    finally:
        store.close()
    stores = {}
    for scheme in ("words", "stemmed"):
        copy = Store(QdrantClient(location=":memory:"), scheme)
        copy.create(fingerprint)
        copy.upsert(
            ChunkPoint(str(p.id), p.vector["dense"], _keywords(scheme, _embed_text(p.payload)), p.payload)
            for p in points
        )
        stores[scheme] = copy
    headings = [(p.payload.get("title", ""), p.payload.get("section", "")) for p in points]
    return Collection(stores, headings, {})


def _embed_text(payload: dict[str, Any]) -> str:
    return f"{heading_path(payload.get('title', ''), payload.get('section', ''))}\n{payload.get('text', '')}"


def _keywords(scheme: str, text: str) -> tuple[list[int], list[float]]:
    return sparse.document_vector(text) if scheme == "words" else sparse.document_vector(text, stem=True)


def retriever(collection: Collection, embeddings: Any, config: Config) -> Retriever:
    """A retriever over the config's store, with its fusion, weight and cap."""
    stem = config.keywords == "stemmed"
    keywords = lambda text: sparse.query_vector(text, stem=stem)  # noqa: E731
    return Retriever(
        collection.stores[config.keywords],
        embeddings,
        mode=config.mode,
        fusion=config.fusion,
        keyword_weight=config.weight,
        per_source=config.per_source,
        keywords=keywords,
    )


def run(collection: Collection, embeddings: Any, config: Config, questions: list[Question]) -> tuple[dict, float]:
    """Each question's top K hits, and the mean retrieval ms per question (embedding cached, so not counted)."""
    found_by = retriever(collection, embeddings, config)
    for q in questions:
        embeddings.embed_query(q.text)
    started = time.perf_counter()
    found = {q.id: found_by.retrieve(q.text, k=K) for q in questions}
    return found, (time.perf_counter() - started) / max(len(questions), 1) * 1000


def rank(hits: list[Hit], sources: tuple[str, ...]) -> int | None:
    """1-based position of the first hit from any of `sources`, or None."""
    return next((n for n, hit in enumerate(hits, 1) if hit.source in sources), None)


def best_cosine(hits: list[Hit]) -> float:
    """What the engine abstains on: the best cosine among the hits."""
    return max((hit.dense_score for hit in hits), default=0.0)


def score(found: dict[str, list[Hit]], questions: list[Question], cut: float) -> dict[str, float]:
    """hit@5, MRR@5, all@5 over answerable questions; abstention on unanswerable and (wrongly) on answerable."""
    answerable = [q for q in questions if q.sources]
    unanswerable = [q for q in questions if not q.sources]
    ranks = [rank(found[q.id], q.sources) for q in answerable]
    every = [set(q.sources) <= {hit.source for hit in found[q.id]} for q in answerable]
    return {
        "hit@5": sum(r is not None for r in ranks) / len(ranks),
        "MRR@5": sum(1 / r for r in ranks if r) / len(ranks),
        "all@5": sum(every) / len(every),
        "abstain unans.": sum(best_cosine(found[q.id]) < cut for q in unanswerable) / max(len(unanswerable), 1),
        "abstain ans.": sum(best_cosine(found[q.id]) < cut for q in answerable) / len(answerable),
    }


def cut_for(collection: Collection, embeddings: Any, config: Config, alpha: float = abstain.ALPHA) -> float:
    """The config's abstention cut: the constant, or the collection's calibrated one."""
    if not config.calibrated:
        return ABSTAIN_THRESHOLD
    if alpha not in collection.cuts:
        calibration = abstain.calibrate(collection.stores["words"], embeddings, collection.headings, alpha=alpha)
        collection.cuts[alpha] = calibration.threshold
    return collection.cuts[alpha]


def report(collections: dict, questions: dict, embeddings: Any) -> tuple[list[list[str]], list[str]]:
    """Rows of the before/after table per KB and half, and notes (cuts, misses)."""
    rows, notes = [], []
    for name, collection in collections.items():
        for config in (BEFORE, DENSE, AFTER):
            cut = cut_for(collection, embeddings, config)
            for half in HALVES:
                found, ms = run(collection, embeddings, config, questions[name][half])
                metrics = score(found, questions[name][half], cut)
                rows.append(
                    [name, half, config.name, *(f"{v:.3f}" for v in metrics.values()), f"{cut:.3f}", f"{ms:.1f}"]
                )
                if config is AFTER and half == "heldout":
                    notes += [f"- {name}, held out, after: answerable questions whose page is not first:"]
                    notes += misses(questions[name][half], found)
        record = abstain.calibrate(collection.stores["words"], embeddings, collection.headings)
        notes.append(f"- {name}: calibration {record.to_json()}")
    return rows, notes


def misses(questions: list[Question], found: dict[str, list[Hit]]) -> list[str]:
    """Answerable questions whose source is not first, with where it landed."""
    return [
        f"  - {q.id} (rank {at or '>5'}): {q.text!r} -> got {found[q.id][0].source if found[q.id] else None}"
        for q in questions
        if q.sources and (at := rank(found[q.id], q.sources)) != 1
    ]


def sweep(collections: dict, questions: dict, embeddings: Any) -> list[str]:
    """The grid on the tuning halves of both KBs together: retrieval settings, then the calibration's alpha."""
    grid = [(Fusion.SCORE, w) for w in (0.1, 0.2, 0.3)] + [(Fusion.RRF, w) for w in (0.5, 1.0, 1.5)]
    configs = [BEFORE, DENSE] + [
        Config(
            f"{keywords} {fusion.value} w={weight} cap={cap}", keywords, fusion=fusion, weight=weight, per_source=cap
        )
        for keywords, (fusion, weight), cap in itertools.product(("words", "stemmed"), grid, (None, 1, 2))
    ]
    rows = []
    for config in configs:
        per_kb = []
        for name, collection in collections.items():
            found, _ = run(collection, embeddings, config, questions[name]["tune"])
            per_kb.append(score(found, questions[name]["tune"], ABSTAIN_THRESHOLD))
        mean = {key: statistics.mean(m[key] for m in per_kb) for key in ("hit@5", "MRR@5", "all@5")}
        rows.append(
            [
                config.name,
                *(f"{m['hit@5']:.3f}/{m['MRR@5']:.3f}/{m['all@5']:.3f}" for m in per_kb),
                f"{mean['hit@5']:.3f}",
                f"{mean['MRR@5']:.3f}",
                f"{mean['all@5']:.3f}",
            ]
        )
    rows.sort(key=lambda row: (float(row[-2]), float(row[-3])), reverse=True)
    lines = ["### Sweep, tuning halves only (per KB: hit@5/MRR@5/all@5)", ""]
    lines += [table(("config", *collections, "mean hit@5", "mean MRR@5", "mean all@5"), rows), ""]
    alpha_rows = []
    for alpha in (0.3, 0.325, 0.35, 0.375, 0.4, 0.45, 0.5, 0.6):
        cells = []
        for name, collection in collections.items():
            found, _ = run(collection, embeddings, AFTER, questions[name]["tune"])
            metrics = score(found, questions[name]["tune"], cut_for(collection, embeddings, AFTER, alpha))
            cells.append(
                f"{metrics['abstain unans.']:.2f} / {metrics['abstain ans.']:.2f} (cut {collection.cuts[alpha]:.3f})"
            )
        alpha_rows.append([alpha, *cells])
    lines += ["Calibration alpha, tuning halves (unanswerable abstained / answerable wrongly abstained):", ""]
    lines += [table(("alpha", *collections), alpha_rows)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="keep the ingested Qdrant folders here")
    parser.add_argument("--out", type=Path, help="also write the markdown section to this file")
    parser.add_argument("--sweep", action="store_true", help="also print the tuning grid (tuning halves only)")
    args = parser.parse_args()
    settings = Settings()
    embeddings = CachedEmbeddings(load_embeddings(settings))
    embeddings.embed_query("warm up")  # the first call pays for lazy set-up, not retrieval
    collections, questions, notes = {}, {}, []
    with tempfile.TemporaryDirectory(prefix="ragtune-eval-") as scratch:
        for name, kb in KBS.items():
            if not kb.is_dir():
                notes.append(f"- {name}: skipped, {kb} is not present")
                continue
            questions[name] = load_questions(name)
            folder = (args.store or Path(scratch)) / name.replace("/", "-")
            collections[name] = build_collection(kb, folder, embeddings, settings)
    rows, more = report(collections, questions, embeddings)
    headers = ("KB", "half", "retrieval", "hit@5", "MRR@5", "all@5", "abstain unans.", "abstain ans.", "cut", "ms/q")
    section = [
        "## Retrieval quality, before and after",
        "",
        machine_line(),
        "",
        f"Top {K}; hit/MRR/all over answerable questions; abstention = share below the cut (unanswerable: "
        "refused, higher is better; answerable: wrongly refused, lower is better); ms/q = retrieval alone, "
        f"the question's embedding excluded. before = RRF, no per-page cap, cut "
        f"{ABSTAIN_THRESHOLD}; after = today's defaults, calibrated cut. {SHARED_NOTE}",
        "",
        table(headers, rows),
        "",
        *notes,
        *more,
    ]
    if args.sweep:
        section += ["", *sweep(collections, questions, embeddings)]
    emit("\n".join(section), args.out)


if __name__ == "__main__":
    main()
