"""Does a cheap fine-tune of the embedder on the collection's own text beat the bundled one?

Issue 22 asks whether an embedder fine-tuned on a collection's own headings and
passages retrieves better than the bundled all-MiniLM-L6-v2. A full fine-tune
costs ~8 s a step on two cores, so this one is made cheap: only the top
`Recipe.layers` transformer layers train; the frozen layers below run once per
text (their output is cached), so a training step and the re-embedding after it
cost only those top layers. The pairs come from the collection alone (no
question of either question set): a chunk's heading path -> the chunk, and a
sentence of the chunk -> the chunk without that sentence (the inverse cloze
task, so the pair cannot be solved by copying words). One epoch, in-batch
negatives (sentence-transformers' MultipleNegativesRankingLoss), batches that
never hold two pairs of one page (a page's own chunks are not negatives for
it), a fixed seed, two torch threads.

Both KBs are ingested as `rag-ingest` does (bench/eval_retrieval.py's
`build_collection`); the bundled rows are eval_retrieval's *after* (today's
defaults: hybrid fusion, per-page cap, calibrated abstention). The fine-tuned
rows re-embed every chunk with the tuned model, keep the same keyword vectors,
fusion, cap and calibration recipe, and embed the questions with the tuned
model. A control row re-embeds with the untouched model through the same
cached path, so a difference is the training's, not the path's. `--sweep`
prints the recipe grid on the tuning halves only; the recipe in `CHOSEN` was
picked there, and the held-out halves are only reported.
"""

from __future__ import annotations

import argparse
import copy
import random
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import SHARED_NOTE, emit, machine_line, table
from eval_retrieval import (
    AFTER,
    DENSE,
    HALVES,
    KBS,
    CachedEmbeddings,
    Collection,
    Question,
    _embed_text,
    _keywords,
    build_collection,
    cut_for,
    load_questions,
    run,
    score,
)
from qdrant_client import QdrantClient

from chatbot.core.config import Settings
from chatbot.core.text import heading_path
from chatbot.llm.loading import embed_model_path, load_embeddings
from chatbot.rag.store import ChunkPoint, Store

BATCH = 32
SEED = 22
THREADS = 2
TRAINABLE_MAX = 2  # layers below the top this many are cached once; a recipe trains at most this many
SENTENCE = re.compile(r"(?<=[.!?])\s+")
TIMING_HEADS = ("KB", "recipe", "chunks", "pairs", "steps", "ingest s", "load s", "frozen s", "train s")
TIMING_HEADS += ("re-embed s", "fine-tune s")
MIN_WORDS = 5  # shorter sentences ("See below.") say too little to stand for their chunk


@dataclass(frozen=True)
class Recipe:
    """How to fine-tune: how many top layers train, at what learning rate, on which pairs."""

    name: str
    layers: int = 2
    lr: float = 5e-5
    kinds: tuple[str, ...] = ("heading", "sentence")
    epochs: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.layers <= TRAINABLE_MAX:
            raise ValueError(f"Recipe.layers={self.layers}: train between 0 and {TRAINABLE_MAX} top layers")


GRID = (
    Recipe("top 1, lr 1e-4", layers=1, lr=1e-4),
    Recipe("top 2, lr 2e-5", lr=2e-5),
    Recipe("top 2, lr 5e-5"),
    Recipe("top 2, lr 1e-4", lr=1e-4),
    Recipe("top 2, lr 2e-4", lr=2e-4),
    Recipe("top 2, lr 1e-4, headings only", lr=1e-4, kinds=("heading",)),
    Recipe("top 2, lr 1e-4, sentences only", lr=1e-4, kinds=("sentence",)),
)
CHOSEN = GRID[6]  # the one recipe above the bundled MRR on data/kb's tuning half (`--sweep`); plausible's must agree
CONTROL = Recipe("control: no training", layers=0, lr=0.0)


@dataclass(frozen=True)
class Pair:
    """A training example: a query made from a chunk, the text it should find, and the chunk's page."""

    query: str
    doc: str
    source: str


def make_pairs(points: list[ChunkPoint], kinds: tuple[str, ...], rng: random.Random) -> list[Pair]:
    """The collection's own pairs: heading path -> chunk, and one sentence -> the chunk without it."""
    pairs = []
    for point in points:
        payload = point.payload
        doc = _embed_text(payload)
        if "heading" in kinds:
            pairs.append(
                Pair(heading_path(payload.get("title", ""), payload.get("section", "")), doc, payload["source"])
            )
        sentences = [s for s in SENTENCE.split(payload.get("text", "")) if len(s.split()) >= MIN_WORDS]
        if "sentence" in kinds and sentences:
            sentence = rng.choice(sentences)
            pairs.append(Pair(sentence, doc.replace(sentence, "", 1), payload["source"]))
    return pairs


def batches(pairs: list[Pair], size: int, rng: random.Random) -> Iterator[list[Pair]]:
    """Shuffled batches with at most one pair per page and no repeated query (in-batch negatives must be wrong)."""
    pool = pairs[:]
    rng.shuffle(pool)
    while pool:
        batch, pages, queries, rest = [], set(), set(), []
        for pair in pool:
            if len(batch) < size and pair.source not in pages and pair.query not in queries:
                batch.append(pair)
                pages.add(pair.source)
                queries.add(pair.query)
            else:
                rest.append(pair)
        yield batch
        pool = rest


class SplitEncoder:
    """The sentence-transformers model cut in two: frozen lower layers run once per text (cached), the top
    `TRAINABLE_MAX` layers and the pooling run per call, with or without gradients."""

    def __init__(self, model: Any) -> None:
        import torch  # imported here, as the project does: only this bench needs it

        self.torch, self.model = torch, model
        self.bert = model[0].auto_model
        self.layers = self.bert.encoder.layer
        self.cut = len(self.layers) - TRAINABLE_MAX
        self.cache: dict[str, Any] = {}
        self.initial = copy.deepcopy([layer.state_dict() for layer in self.layers[self.cut :]])

    def prefix(self, texts: list[str]) -> None:
        """Run the frozen lower layers over the texts not cached yet, longest first in batches."""
        from transformers.masking_utils import create_bidirectional_mask

        todo = sorted({t for t in texts if t not in self.cache}, key=len, reverse=True)
        self.model.eval()
        with self.torch.no_grad():
            for start in range(0, len(todo), BATCH):
                chunk = todo[start : start + BATCH]
                tokens = self.model.tokenizer(
                    chunk, padding=True, truncation=True, max_length=self.model.max_seq_length, return_tensors="pt"
                )
                hidden = self.bert.embeddings(
                    input_ids=tokens["input_ids"], token_type_ids=tokens.get("token_type_ids")
                )
                mask = create_bidirectional_mask(
                    config=self.bert.config, inputs_embeds=hidden, attention_mask=tokens["attention_mask"]
                )
                for layer in self.layers[: self.cut]:
                    hidden = layer(hidden, mask)
                for text, states, keep in zip(chunk, hidden, tokens["attention_mask"].sum(-1), strict=True):
                    self.cache[text] = states[: int(keep)].clone()

    def head(self, texts: list[str]) -> Any:
        """Unit embeddings of cached texts through the top layers and pooling (gradients as the caller's mode)."""
        from transformers.masking_utils import create_bidirectional_mask

        states = [self.cache[t] for t in texts]
        longest = max(len(s) for s in states)
        hidden = self.torch.zeros(len(states), longest, states[0].shape[-1])
        attention = self.torch.zeros(len(states), longest, dtype=self.torch.int64)
        for row, s in enumerate(states):
            hidden[row, : len(s)] = s
            attention[row, : len(s)] = 1
        mask = create_bidirectional_mask(config=self.bert.config, inputs_embeds=hidden, attention_mask=attention)
        for layer in self.layers[self.cut :]:
            hidden = layer(hidden, mask)
        features = {"token_embeddings": hidden, "attention_mask": attention}
        for module in list(self.model)[1:]:  # pooling, normalisation
            features = module(features)
        return features["sentence_embedding"]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit vectors for the texts through the cached path, in eval mode."""
        self.prefix(texts)
        self.model.eval()
        with self.torch.no_grad():
            parts = [self.head(texts[s : s + BATCH]) for s in range(0, len(texts), BATCH)]
        return self.torch.cat(parts).numpy()

    def reset(self) -> None:
        """Put the top layers back to the bundled weights."""
        for layer, state in zip(self.layers[self.cut :], self.initial, strict=True):
            layer.load_state_dict(state)

    def check(self, texts: list[str]) -> None:
        """The cached path must give the model's own vectors, or every fine-tuned number would be off."""
        ours = self.encode(texts)
        theirs = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        worst = float(np.min(np.sum(ours * theirs, axis=1)))
        if worst < 0.9999:
            raise RuntimeError(f"the cached encoder drifts from the model (cosine {worst:.5f}): fix SplitEncoder")


def fine_tune(encoder: SplitEncoder, points: list[ChunkPoint], recipe: Recipe) -> dict[str, float]:
    """Train the recipe's top layers for its epochs; returns the pair and step counts and seconds per phase."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch = encoder.torch
    encoder.reset()
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    started = time.perf_counter()
    pairs = make_pairs(points, recipe.kinds, rng)
    encoder.prefix([t for p in pairs for t in (p.query, p.doc)])
    prefix_s = time.perf_counter() - started
    trainable = [p for layer in encoder.layers[len(encoder.layers) - recipe.layers :] for p in layer.parameters()]
    for parameter in encoder.model.parameters():
        parameter.requires_grad_(False)
    for parameter in trainable:
        parameter.requires_grad_(True)
    steps, started = 0, time.perf_counter()
    if trainable and recipe.lr > 0:
        loss_fn = MultipleNegativesRankingLoss(encoder.model)  # scale 20, cosine, query -> doc
        optimizer = torch.optim.AdamW(trainable, lr=recipe.lr, weight_decay=0.01)
        encoder.model.train()
        for _ in range(recipe.epochs):
            for batch in batches(pairs, BATCH, rng):
                if len(batch) < 4:  # a tail of one page's leftovers: too few negatives to learn from
                    continue
                queries = encoder.head([p.query for p in batch])
                docs = encoder.head([p.doc for p in batch])
                loss = loss_fn.compute_loss_from_embeddings([queries, docs], None)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
        encoder.model.eval()
    return {"pairs": len(pairs), "steps": steps, "prefix_s": prefix_s, "train_s": time.perf_counter() - started}


class TunedEmbeddings:
    """The LangChain `Embeddings` surface the retriever and calibration call, over the tuned model."""

    def __init__(self, encoder: SplitEncoder) -> None:
        self.encoder = encoder

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        model = self.encoder.model
        return model.encode(texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True).tolist()


def reembedded(base: Collection, encoder: SplitEncoder) -> tuple[Collection, float]:
    """The KB's chunks with dense vectors from the (tuned) encoder, same payloads and keyword vectors."""
    started = time.perf_counter()
    vectors = encoder.encode([_embed_text(p.payload) for p in base.points])
    store = Store(QdrantClient(location=":memory:"), "words")
    store.create(base.stores["words"].fingerprint())
    points = [
        ChunkPoint(p.id, vector.tolist(), _keywords("words", _embed_text(p.payload)), p.payload)
        for p, vector in zip(base.points, vectors, strict=True)
    ]
    store.upsert(points)
    return Collection({"words": store}, base.headings, {}, points), time.perf_counter() - started


def measure(collection: Collection, embeddings: Any, questions: dict[str, list[Question]], halves=HALVES) -> list:
    """Per config (today's defaults, dense only) and half: hit@5, MRR@5, all@5, abstention, the cut."""
    rows = []
    for config in (AFTER, DENSE):
        cut = cut_for(collection, embeddings, config)
        for half in halves:
            found, _ = run(collection, embeddings, config, questions[half])
            rows.append((config.name, half, score(found, questions[half], cut), cut))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="keep the bundled ingest's Qdrant folders here (re-runs skip it)")
    parser.add_argument("--out", type=Path, help="also write the markdown section to this file")
    parser.add_argument("--sweep", action="store_true", help="also run the recipe grid (tuning halves only)")
    parser.add_argument("--kb", choices=list(KBS), action="append", help="only this KB (repeatable; default: both)")
    parser.add_argument(
        "--recipe", choices=[r.name for r in GRID], action="append", help="with --sweep: only this grid recipe"
    )
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    settings = Settings()
    bundled = CachedEmbeddings(load_embeddings(settings))
    bundled.embed_query("warm up")
    path = embed_model_path(settings)
    rows, timing, sweep_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="ragtune-ft-") as scratch:
        for name, kb in KBS.items():
            if args.kb and name not in args.kb:
                continue
            if not kb.is_dir():
                print(f"{name}: skipped, {kb} is not present", flush=True)
                continue
            questions = load_questions(name)
            started = time.perf_counter()
            base = build_collection(kb, (args.store or Path(scratch)) / name.replace("/", "-"), bundled, settings)
            ingest_s = time.perf_counter() - started
            for config, half, metrics, cut in measure(base, bundled, questions):
                rows.append([name, half, f"bundled, {config}", *_cells(metrics), f"{cut:.3f}"])
            started = time.perf_counter()
            encoder = SplitEncoder(SentenceTransformer(str(path), device="cpu", local_files_only=True))
            load_s = time.perf_counter() - started
            encoder.check([_embed_text(p.payload) for p in base.points[:16]] + [q.text for q in questions["tune"][:16]])
            encoder.cache.clear()  # so the chosen recipe, run first, pays for its frozen layers in full
            for recipe in (CHOSEN, CONTROL, *(r for r in GRID if r is not CHOSEN and _picked(r, args))):
                spent = fine_tune(encoder, base.points, recipe)
                tuned, embed_s = reembedded(base, encoder)
                halves = ("tune",) if recipe in GRID and recipe is not CHOSEN else HALVES
                embeddings = CachedEmbeddings(TunedEmbeddings(encoder))
                for config, half, metrics, cut in measure(tuned, embeddings, questions, halves):
                    cells = [name, half, f"{recipe.name}, {config}", *_cells(metrics), f"{cut:.3f}"]
                    print(cells, flush=True)  # a long sweep's rows survive an interruption
                    if halves == HALVES:
                        rows.append(cells)
                    if args.sweep and half == "tune" and recipe is not CONTROL:
                        sweep_rows.append(cells)
                seconds = (ingest_s, load_s, spent["prefix_s"], spent["train_s"], embed_s)
                total = sum(seconds[1:])
                counts = (len(base.points), spent["pairs"], spent["steps"])
                timing.append([name, recipe.name, *counts, *(f"{v:.1f}" for v in (*seconds, total))])
                print(timing[-1], flush=True)
    emit("\n".join(_section(rows, timing, sweep_rows)), args.out)


def _picked(recipe: Recipe, args: argparse.Namespace) -> bool:
    return args.sweep and (not args.recipe or recipe.name in args.recipe)


def _cells(metrics: dict[str, float]) -> list[str]:
    return [f"{metrics[key]:.3f}" for key in ("hit@5", "MRR@5", "all@5", "abstain unans.", "abstain ans.")]


def _section(rows: list, timing: list, sweep_rows: list) -> list[str]:
    metric_heads = ("hit@5", "MRR@5", "all@5", "abstain unans.", "abstain ans.", "cut")
    lines = [
        "## Embedder fine-tuned on the collection vs the bundled one",
        "",
        machine_line(),
        "",
        f"Top 5; every row uses today's retrieval (hybrid fusion, one chunk per page) unless it says dense only; "
        f"cut = the collection's calibrated abstention cut, recomputed with each row's embedder. Fine-tune: top "
        f"layers of all-MiniLM-L6-v2 only, one epoch, batch {BATCH}, MultipleNegativesRankingLoss, seed {SEED}, "
        f"{THREADS} torch threads; pairs from the collection's own headings and sentences. {SHARED_NOTE}",
        "",
        table(("KB", "half", "embedder, retrieval", *metric_heads), rows),
        "",
        "Seconds (ingest = the bundled `rag-ingest` path plus the bench's in-memory copies, 0 with a reused "
        "`--store`; fine-tune = loading the torch model + frozen layers once per text + training + re-embedding "
        "every chunk; the chosen recipe runs first, so later recipes find the frozen layers' output cached):",
        "",
        table(
            TIMING_HEADS,
            timing,
        ),
    ]
    if sweep_rows:
        lines += ["", "### Recipe grid, tuning halves only", ""]
        lines += [table(("KB", "half", "recipe, retrieval", *metric_heads), sweep_rows)]
    return lines


if __name__ == "__main__":
    main()
