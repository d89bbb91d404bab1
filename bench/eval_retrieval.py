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

Rows named "tried: ..." are ideas measured next to the defaults in the same run
and not adopted, because they did not beat the defaults on the tuning halves of
both KBs (`Variant`, `signal`); they are scored exhaustively in numpy, so their
ms/q is not the engine's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, SHARED_NOTE, emit, machine_line, table
from qdrant_client import QdrantClient

from chatbot.core.config import Settings
from chatbot.core.errors import FingerprintMismatchError
from chatbot.core.text import heading_path
from chatbot.engine import ABSTAIN_THRESHOLD
from chatbot.llm.loading import load_embeddings
from chatbot.rag import abstain, sparse
from chatbot.rag.retrieval import (
    FUSION,
    KEYWORD_WEIGHT,
    MIN_CANDIDATES,
    PER_SOURCE,
    RRF_K,
    Fusion,
    Hit,
    RetrievalMode,
    Retriever,
)
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
    variant: str | None = None  # an idea tried this round and not adopted (`Variant`), on top of the defaults
    signal: str = "cosine"  # what abstention cuts on: "cosine" (the engine's), or "cosine+gap" (tried, see `signal`)


BEFORE = Config("before", "words", fusion=Fusion.RRF, weight=1.0, per_source=None, calibrated=False)
AFTER = Config("after", "words")
DENSE = Config("dense only", "words", mode=RetrievalMode.DENSE, per_source=None, calibrated=False)
# Ideas of this round, measured next to the defaults on the same chunks and vectors (none beat them on the
# tuning halves of both KBs, so none is the default; `Variant` says what each does).
TRIED = (
    Config("tried: page fusion", "words", variant="page"),
    Config("tried: neighbours 0.1", "words", variant="neighbours"),
    Config("tried: heading list 0.5", "words", variant="headings"),
    Config("tried: abstain cos+gap", "words", signal="cosine+gap"),
)
GAP_WEIGHT = 0.5  # "cosine+gap": best cosine + this times its lead over the next page's best cosine
GAP_ALPHA = 0.3  # ... calibrated as the engine's cut is, at this alpha (best of the tuning-half grid for that signal)


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
    points: list[ChunkPoint] = field(default_factory=list)  # every chunk, for the tried variants' exhaustive scoring
    heading_vectors: Any = None  # each point's heading path, embedded as a query (the "headings" variant)
    signal_cuts: dict[str, float] = field(default_factory=dict)  # abstention signal -> its calibrated cut


def build_collection(kb: Path, folder: Path, embeddings: Any, settings: Settings) -> Collection:
    """Ingest as `rag-ingest` does, then copy the chunks into one in-memory store per keyword scheme."""
    store = Store.open(Settings(qdrant_path=folder))
    try:
        try:
            report = ingest_paths([kb], settings, store=store, embeddings=embeddings.inner)
        except FingerprintMismatchError:  # a --store folder from an older version: rebuild it
            report = ingest_paths([kb], settings, store=store, embeddings=embeddings.inner, recreate=True)
        print(f"{kb.name}: {store.count()} chunks ({report.chunks} embedded, {report.seconds:.0f} s)", flush=True)
        points = sorted(store.records(), key=lambda point: point.id)  # any engine (Edge has no qdrant-client)
        fingerprint = store.fingerprint()
    finally:
        store.close()
    stores = {}
    for scheme in ("words", "stemmed"):
        copy = Store(QdrantClient(location=":memory:"), scheme)
        copy.create(fingerprint)
        copy.upsert(ChunkPoint(p.id, p.dense, _keywords(scheme, _embed_text(p.payload)), p.payload) for p in points)
        stores[scheme] = copy
    headings = [(p.payload.get("title", ""), p.payload.get("section", "")) for p in points]
    paths = [heading_path(*pair) for pair in headings]
    unique = sorted(set(paths))
    embedded = dict(zip(unique, embeddings.inner.embed_documents(unique), strict=True))
    heading_vectors = _unit(np.array([embedded[path] for path in paths], dtype=np.float32))
    return Collection(stores, headings, {}, points, heading_vectors)


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=-1, keepdims=True), 1e-12)


class Variant:
    """An idea tried on top of the defaults (RRF of dense and keyword lists, a page at most once), scored
    exhaustively in numpy (the KBs are small): the same candidates the engine sees, ranked another way.

    - "page": fusion of *pages*: each list ranks pages by their best chunk, so a page's second chunk no
      longer pushes other pages down a list; a page's hit is its best-cosine chunk.
    - "neighbours": a chunk's dense score gains 0.1 times the best cosine of its neighbours in the page
      (chunk_index +-1), so a passage that spans two chunks counts as one.
    - "headings": a third RRF list (weight 0.5) ranks chunks by the cosine of the question and the chunk's
      heading path alone (title > section), so a page named for what the customer asks rises.
    """

    def __init__(self, collection: Collection, embeddings: Any, kind: str) -> None:
        self.kind, self.embeddings, self.points = kind, embeddings, collection.points
        self.store = collection.stores["words"]
        self.matrix = np.array([p.dense for p in self.points], dtype=np.float32)
        self.headings = collection.heading_vectors
        self.row = {p.id: n for n, p in enumerate(self.points)}
        self.sources = [p.payload["source"] for p in self.points]
        place = {(p.payload["source"], p.payload.get("chunk_index")): n for n, p in enumerate(self.points)}
        self.neighbours = [
            [place[key] for key in ((source, index - 1), (source, index + 1)) if key in place]
            for source, index in ((p.payload["source"], p.payload.get("chunk_index", 0)) for p in self.points)
        ]

    def retrieve(self, query: str, *, k: int) -> list[Hit]:
        vector = _unit(np.array(self.embeddings.embed_query(query), dtype=np.float32))
        cosine = self.matrix @ vector
        keyword = [self.row[m.id] for m in self.store.search_sparse(sparse.query_vector(query), limit=MIN_CANDIDATES)]
        if self.kind == "page":
            return self._pages(cosine, keyword, k)
        dense = cosine
        if self.kind == "neighbours":
            dense = cosine + 0.1 * np.array([max((cosine[j] for j in near), default=0.0) for near in self.neighbours])
        lists = [(1.0, list(np.argsort(-dense)[:MIN_CANDIDATES])), (KEYWORD_WEIGHT, keyword)]
        if self.kind == "headings":
            lists.append((0.5, list(np.argsort(-(self.headings @ vector))[:MIN_CANDIDATES])))
        score = _rrf(lists)
        order = sorted(score, key=lambda n: (-score[n], -cosine[n]))
        chosen, seen = [], set()
        for n in order:
            if self.sources[n] not in seen and len(chosen) < k:
                seen.add(self.sources[n])
                chosen.append(n)
        return [self._hit(n, score[n], cosine[n]) for n in chosen]

    def _pages(self, cosine: np.ndarray, keyword: list[int], k: int) -> list[Hit]:
        best: dict[str, int] = {}
        for n in np.argsort(-cosine):
            best.setdefault(self.sources[n], int(n))
        by_keyword = list(dict.fromkeys(self.sources[n] for n in keyword))
        score = _rrf([(1.0, list(best)[:MIN_CANDIDATES]), (KEYWORD_WEIGHT, by_keyword)])
        order = sorted(score, key=lambda page: (-score[page], -cosine[best[page]]))[:k]
        return [self._hit(best[page], score[page], cosine[best[page]]) for page in order]

    def _hit(self, n: int, score: float, cosine: float) -> Hit:
        payload = self.points[n].payload
        return Hit(
            payload["source"],
            payload.get("title", ""),
            payload.get("section", ""),
            float(score),
            self.points[n].id,
            payload.get("text", ""),
            float(cosine),
        )


def _rrf(lists: list[tuple[float, list]]) -> dict:
    """Weighted reciprocal rank fusion with the engine's rank constant."""
    score: dict = {}
    for weight, found in lists:
        for place, key in enumerate(found, 1):
            score[key] = score.get(key, 0.0) + weight / (place + RRF_K - 1)
    return score


def _embed_text(payload: dict[str, Any]) -> str:
    return f"{heading_path(payload.get('title', ''), payload.get('section', ''))}\n{payload.get('text', '')}"


def _keywords(scheme: str, text: str) -> tuple[list[int], list[float]]:
    return sparse.document_vector(text) if scheme == "words" else sparse.document_vector(text, stem=True)


def retriever(collection: Collection, embeddings: Any, config: Config) -> Retriever | Variant:
    """A retriever over the config's store, with its fusion, weight and cap (or the tried variant)."""
    if config.variant:
        return Variant(collection, embeddings, config.variant)
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


def signal(hits: list[Hit], kind: str = "cosine") -> float:
    """What abstention cuts on: the best cosine, or (tried) that plus GAP_WEIGHT times its lead over the best
    cosine of another page among the hits (a question the KB covers tends to have one clear page)."""
    if kind == "cosine":
        return best_cosine(hits)
    ranked = sorted(hits, key=lambda hit: -hit.dense_score)
    runner_up = next((hit.dense_score for hit in ranked[1:] if hit.source != ranked[0].source), 0.0) if ranked else 0.0
    return best_cosine(hits) + GAP_WEIGHT * (best_cosine(hits) - runner_up)


def score(found: dict[str, list[Hit]], questions: list[Question], cut: float, kind: str = "cosine") -> dict[str, float]:
    """hit@5, MRR@5, all@5 over answerable questions; abstention on unanswerable and (wrongly) on answerable."""
    answerable = [q for q in questions if q.sources]
    unanswerable = [q for q in questions if not q.sources]
    ranks = [rank(found[q.id], q.sources) for q in answerable]
    every = [set(q.sources) <= {hit.source for hit in found[q.id]} for q in answerable]
    return {
        "hit@5": sum(r is not None for r in ranks) / len(ranks),
        "MRR@5": sum(1 / r for r in ranks if r) / len(ranks),
        "all@5": sum(every) / len(every),
        "abstain unans.": sum(signal(found[q.id], kind) < cut for q in unanswerable) / max(len(unanswerable), 1),
        "abstain ans.": sum(signal(found[q.id], kind) < cut for q in answerable) / len(answerable),
    }


def cut_for(collection: Collection, embeddings: Any, config: Config, alpha: float = abstain.ALPHA) -> float:
    """The config's abstention cut: the constant, or the collection's calibrated one."""
    if not config.calibrated:
        return ABSTAIN_THRESHOLD
    if config.signal != "cosine":
        return signal_cut(collection, embeddings, config)
    if alpha not in collection.cuts:
        calibration = abstain.calibrate(collection.stores["words"], embeddings, collection.headings, alpha=alpha)
        collection.cuts[alpha] = calibration.threshold
    return collection.cuts[alpha]


def signal_cut(collection: Collection, embeddings: Any, config: Config) -> float:
    """A tried signal's cut, set as the engine's is: GAP_ALPHA of the way from the off-topic questions' median
    signal to the heading questions' (chatbot.rag.abstain), each question retrieved as the config retrieves."""
    if config.signal not in collection.signal_cuts:
        found_by = retriever(collection, embeddings, config)
        median = {
            name: statistics.median(signal(found_by.retrieve(text, k=K), config.signal) for text in texts)
            for name, texts in (("on", abstain.heading_questions(collection.headings)), ("off", abstain.OFF_TOPIC))
        }
        collection.signal_cuts[config.signal] = median["off"] + GAP_ALPHA * (median["on"] - median["off"])
    return collection.signal_cuts[config.signal]


def report(collections: dict, questions: dict, embeddings: Any) -> tuple[list[list[str]], list[str]]:
    """Rows of the before/after table per KB and half, and notes (cuts, misses)."""
    rows, notes = [], []
    for name, collection in collections.items():
        for config in (BEFORE, DENSE, AFTER, *TRIED):
            cut = cut_for(collection, embeddings, config)
            for half in HALVES:
                found, ms = run(collection, embeddings, config, questions[name][half])
                metrics = score(found, questions[name][half], cut, config.signal)
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
        f"{ABSTAIN_THRESHOLD}; after = today's defaults, calibrated cut; tried = ideas not adopted (they lost on "
        "a tuning half; see the script's `Variant` and `signal`), on top of after. "
        f"{SHARED_NOTE}",
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
