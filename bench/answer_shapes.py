"""How much of a question's `must_include` each shape of extractive answer could hold.

The adapter's answers copy words from the retrieved passages (adapters/training/examples.py), so
what it can score is bounded by which words it copies. For each answerable question of a
set this takes the engine's top-k passages and scores, as must-include recall, answers cut
to N words that are:

- `[1] from its start`: the first passage, copied from its start;
- `best passage from its start`: the passage with the most question terms, from its start;
- `best sentence onwards`: the sentence (or list line) with the most question terms, and what follows it.

Run from the repo root against an ingested collection:
    python bench/answer_shapes.py data/kb_qa.jsonl
    RAG_QDRANT_PATH=.ragtune/plausible RAG_COLLECTION=plausible python bench/answer_shapes.py tests/data/plausible_qa.jsonl
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from common import table

from chatbot.core.config import Settings
from chatbot.eval.metrics import term_recall
from chatbot.eval.questions import load_questions
from chatbot.llm.loading import load_embeddings
from chatbot.rag.retrieval import Retriever
from chatbot.rag.sparse import terms
from chatbot.rag.store import Store

WORDS = (30, 60, 90)


def main(path: Path) -> None:
    settings = Settings.from_env()
    questions = [q for q in load_questions(path) if q.must_include]
    shapes = ("[1] from its start", "best passage from its start", "best sentence onwards")
    scores: dict[tuple[str, int], list[float]] = {(shape, n): [] for shape in shapes for n in WORDS}
    store = Store.open(settings)
    try:
        retriever = Retriever(store, load_embeddings(settings), top_k=settings.top_k)
        for question in questions:
            texts = [hit.text for hit in retriever.retrieve(question.question, k=settings.top_k)]
            asked = set(terms(question.question))

            def overlap(text: str, asked: set[str] = asked) -> int:
                return len(asked & set(terms(text)))

            starts = [(units[n], " ".join(units[n:])) for units in map(_sentences, texts) for n in range(len(units))]
            onwards = max(starts, key=lambda start: overlap(start[0]))[1]
            candidates = (texts[0], max(texts, key=overlap), onwards)
            for shape, answer in zip(shapes, candidates, strict=True):
                for words in WORDS:
                    scores[shape, words].append(term_recall(" ".join(answer.split()[:words]), question.must_include))
    finally:
        store.close()
    rows = [[shape, *(f"{sum(scores[shape, n]) / len(questions):.2f}" for n in WORDS)] for shape in shapes]
    print(f"{path} ({len(questions)} answerable questions, top {settings.top_k}, {settings.collection})")
    print(table(["answer copies", *(f"{n} words" for n in WORDS)], rows))


def _sentences(text: str) -> list[str]:
    units = []
    for line in filter(str.strip, text.splitlines()):
        units += [line] if line.lstrip().startswith(("-", "*", "|")) else re.split(r"(?<=[.!?])\s+", line)
    return units


if __name__ == "__main__":
    main(Path(sys.argv[1]))
