"""Retrieval quality: hit@1, hit@5 and MRR@5 of dense vs hybrid retrieval, with and without MMR.

Each knowledge base is ingested exactly as `rag-ingest` does it (the bundled
all-MiniLM-L6-v2, chunks of the model's window), into a temporary local Qdrant
folder (or `--store DIR`, which makes re-runs skip the embedding). A question
counts as answerable when its `source` is set; a multi-source question scores a
hit when *any* of its sources is in the top k, and "all@5" says how often *every*
one is. The cosine (`dense_score`) of the hybrid hits on answerable and
unanswerable questions gives the abstention threshold the engine uses: the cut
that classifies the most questions of data/kb right (unanswerable below it,
answerable at or above it); the other KB shows how well that cut transfers.
ms/query includes embedding the question.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from common import ROOT, SHARED_NOTE, emit, machine_line, table

from chatbot.core.config import Settings
from chatbot.llm.loading import load_embeddings
from chatbot.rag.retrieval import Hit, RetrievalMode, Retriever
from chatbot.rag.store import Store
from ingest.pipeline import ingest_paths

K = 5
KBS = {
    "data/kb": (ROOT / "data" / "kb", ROOT / "data" / "kb_qa.jsonl"),
    "plausible": (ROOT.parent / "shared" / "kb" / "plausible", ROOT / "tests" / "data" / "plausible_qa.jsonl"),
}
CONFIGS = [(mode, mmr) for mode in RetrievalMode for mmr in (False, True)]


@dataclass(frozen=True)
class Question:
    """One line of a question set, reduced to what retrieval is judged on."""

    id: str
    text: str
    sources: tuple[str, ...]  # empty: the knowledge base cannot answer it


def load_questions(path: Path) -> list[Question]:
    """The questions of a DESIGN.md question set."""
    questions = []
    for line in path.read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            source = item["source"]
            sources = () if source is None else (source,) if isinstance(source, str) else tuple(source)
            questions.append(Question(item["id"], item["question"], sources))
    return questions


def rank(hits: list[Hit], sources: tuple[str, ...]) -> int | None:
    """1-based position of the first hit from any of `sources`, or None."""
    return next((n for n, hit in enumerate(hits, 1) if hit.source in sources), None)


def score(runs: dict[str, list[Hit]], questions: list[Question]) -> dict[str, float]:
    """hit@1, hit@5, MRR@5 and all@5 over the answerable questions."""
    answerable = [q for q in questions if q.sources]
    ranks = [rank(runs[q.id], q.sources) for q in answerable]
    every = [set(q.sources) <= {hit.source for hit in runs[q.id]} for q in answerable]
    return {
        "hit@1": sum(r == 1 for r in ranks) / len(ranks),
        "hit@5": sum(r is not None for r in ranks) / len(ranks),
        "MRR@5": sum(1 / r for r in ranks if r) / len(ranks),
        "all@5": sum(every) / len(every),
    }


def accuracy(cut: float, answerable: list[float], unanswerable: list[float]) -> float:
    """Share of questions a cut classifies right: unanswerable below it, answerable at or above it."""
    right = sum(s < cut for s in unanswerable) + sum(s >= cut for s in answerable)
    return right / (len(answerable) + len(unanswerable))


def best_threshold(answerable: list[float], unanswerable: list[float]) -> tuple[float, float]:
    """The cut with the best accuracy (the middle one of equally good cuts), and that accuracy."""
    points = sorted({*answerable, *unanswerable})
    cuts = [points[0] - 1e-3] + [(a + b) / 2 for a, b in pairwise(points)] + [points[-1] + 1e-3]
    scored = [(accuracy(cut, answerable, unanswerable), cut) for cut in cuts]
    top = max(value for value, _ in scored)
    best = statistics.median_low([cut for value, cut in scored if value == top])
    return best, top


def ingest(kb: Path, folder: Path, embeddings: Any, settings: Settings) -> Store:
    """The KB in a local Qdrant folder, cut and embedded exactly as `rag-ingest` does."""
    store = Store.open(Settings(qdrant_path=folder))
    report = ingest_paths([kb], settings, store=store, embeddings=embeddings)
    print(f"{kb.name}: {store.count()} chunks ({report.chunks} embedded now, {report.seconds:.0f} s)", flush=True)
    return store


def evaluate(name: str, store: Store, embeddings: Any, questions: list[Question]) -> tuple[list[list[str]], dict]:
    """Table rows for every configuration, and the raw runs for the threshold and miss lists."""
    retriever = Retriever(store, embeddings)
    rows, runs = [], {}
    for mode, mmr in CONFIGS:
        started = time.perf_counter()
        found = {q.id: retriever.retrieve(q.text, k=K, mode=mode, mmr=mmr) for q in questions}
        ms = (time.perf_counter() - started) / len(questions) * 1000
        runs[mode, mmr] = found
        metrics = score(found, questions)
        rows.append([name, mode.value, "on" if mmr else "off", *(f"{v:.3f}" for v in metrics.values()), f"{ms:.0f}"])
    return rows, runs


# Which cosine abstention could look at: the first hit's, or the best among the hits (fusion may rank it lower).
SIGNALS = {
    "cosine of the hybrid top hit": lambda hits: hits[0].dense_score if hits else 0.0,
    "max cosine over the hybrid top 5": lambda hits: max((hit.dense_score for hit in hits), default=0.0),
}


def abstention(questions: list[Question], runs: dict, cuts: dict[str, float] | None = None) -> tuple[list[str], dict]:
    """Lines on each signal for answerable vs unanswerable questions, and the best cut per signal.

    With `cuts` (calibrated on another KB) it also says how well those cuts transfer.
    """
    lines, best = [], {}
    found = runs[RetrievalMode.HYBRID, False]
    for label, signal in SIGNALS.items():
        answerable = [signal(found[q.id]) for q in questions if q.sources]
        unanswerable = [signal(found[q.id]) for q in questions if not q.sources]
        cut, top = best_threshold(answerable, unanswerable)
        best[label], scores = cut, answerable + unanswerable
        lines += [
            f"  - {label}: answerable (n={len(answerable)}) {_spread(answerable)}; "
            f"unanswerable (n={len(unanswerable)}) {_spread(unanswerable)}",
            f"    **best threshold {cut:.3f}: accuracy {top:.3f}** "
            f"({sum(s >= cut for s in answerable)}/{len(answerable)} answerable kept, "
            f"{sum(s < cut for s in unanswerable)}/{len(unanswerable)} unanswerable refused; "
            f"nearest scores {max((s for s in scores if s < cut), default=0):.4f} below, "
            f"{min((s for s in scores if s >= cut), default=1):.4f} above)",
        ]
        if cuts and label in cuts:
            lines.append(
                f"    data/kb's threshold {cuts[label]:.3f} here: accuracy "
                f"{accuracy(cuts[label], answerable, unanswerable):.3f} "
                f"({sum(s >= cuts[label] for s in answerable)}/{len(answerable)} kept, "
                f"{sum(s < cuts[label] for s in unanswerable)}/{len(unanswerable)} refused)"
            )
    return lines, best


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    p10 = ordered[len(ordered) // 10]
    return f"min {ordered[0]:.3f}, p10 {p10:.3f}, median {statistics.median(ordered):.3f}, max {ordered[-1]:.3f}"


def misses(questions: list[Question], found: dict[str, list[Hit]]) -> list[str]:
    """Answerable questions whose source is not first, with where it landed."""
    lines = []
    for q in questions:
        if q.sources and (at := rank(found[q.id], q.sources)) != 1:
            lines.append(f"  - {q.id} (rank {at or '>5'}): {q.text!r} -> got {found[q.id][0].source}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="keep the ingested Qdrant folders here (re-runs skip embedding)")
    parser.add_argument("--out", type=Path, help="also write the markdown section to this file")
    args = parser.parse_args()
    settings = Settings()
    embeddings = load_embeddings(settings)
    embeddings.embed_query("warm up")  # the first call pays for lazy set-up, not retrieval
    rows, notes, cuts = [], [], None
    with tempfile.TemporaryDirectory(prefix="ragtune-eval-") as scratch:
        for name, (kb, qa) in KBS.items():
            if not kb.is_dir():
                notes.append(f"- {name}: skipped, {kb} is not present")
                continue
            questions = load_questions(qa)
            store = ingest(kb, (args.store or Path(scratch)) / name.replace("/", "-"), embeddings, settings)
            try:
                kb_rows, runs = evaluate(name, store, embeddings, questions)
            finally:
                store.close()
            rows += kb_rows
            notes += [
                f"- {name}: not first with hybrid, MMR off:",
                *misses(questions, runs[RetrievalMode.HYBRID, False]),
            ]
            if any(not q.sources for q in questions):
                lines, found_cuts = abstention(questions, runs, cuts)
                cuts = cuts or found_cuts  # the first KB (data/kb) calibrates; later ones test the transfer
                notes += [f"- {name}: abstention, answerable vs unanswerable questions:", *lines]
    headers = ("KB", "mode", "MMR", "hit@1", "hit@5", "MRR@5", "all@5", "ms/query")
    section = "\n".join(
        [
            "## Retrieval quality",
            "",
            f"{machine_line()}",
            "",
            f"Top {K}, answerable questions only; all@5 = every listed source in the top 5. {SHARED_NOTE}",
            "",
            table(headers, rows),
            "",
            *notes,
        ]
    )
    emit(section, args.out)


if __name__ == "__main__":
    main()
