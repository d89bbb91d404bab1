"""Build the shipped adapter's training pairs from seed questions and the ingested knowledge base.

`python -m adapters.training.examples SEEDS.jsonl --out PAIRS.jsonl` turns each seed
(`{"question", "answer", "source", "quote", "kind"}`, `answer`/`source`/`quote` null for
questions the knowledge base cannot answer) into pairs shaped like the engine's real
prompts, so the adapter learns the job it will do:

- answerable: the passages the real retriever returns for the question, in its order, with
  the passage holding `quote` surely among them, -> that passage's own words: its paragraph
  copied from the start up to `EXCERPT_WORDS` (from nearer the quote when it lies later),
  led by its citation on a line of its own ("According to [2]:\n...");
- out-of-scope questions with what retrieval found for them -> a plain refusal;
- a few questions without any context (the plain prompt) -> the answer, for the voice.

Strategies follow use: mostly zero-shot, some few-shot and chain-of-thought.

Why every answer opens the same way: under greedy decoding the first token decides
between answering and refusing. Answers that each start differently ("Yes", "The",
"Go") split their share of that first token, so the one refusal wording ("I") was
the single likeliest token whenever the model was unsure: an adapter trained that way
refused 9 questions in 10. Led by "According to [n]", the answers' share stays
together and the model refuses only when it is fairly sure; picking the passage
first also makes the rest a copy from it.

Why copy the passage from its start rather than answer in one sentence: the expected facts
sit near the start of the retriever's first passage far more often than in any one sentence
the model could pick. `bench/answer_shapes.py` scores answers cut to 90 words: passage [1]
from its start holds 69% of the sample set's expected terms (57% on Plausible's docs), the
best-matching sentence and what follows it 47% (45%), the best-matching passage 60% (36%).
Adapters trained on one-sentence answers reached 0.34-0.41; on the quote's paragraph
(<= 60 words, from the quote outwards) 0.54.

`data/training/dev_qa.jsonl` holds 23 questions about the sample knowledge base that neither
the seeds nor the evaluation sets ask (10 yes/no questions the passages settle without naming
their subject: a limit, an exhaustive list, a plan; 13 out of scope, 9 of them next to
documented topics): a dev set, to judge a change to the seeds before the evaluation sets see it.

Refusals are about a fifth of the pairs and come only from out-of-scope questions; the share moves
the whole refusal boundary (15%: too few refused, 20%: too many), so the boundary is then set on
the dev set by `adapters.training.calibrate`. Near misses (an answerable question with its page's passages
taken out -> a refusal) were tried at 5% of pairs: the adapter then refused 21% of answerable
questions, against 2% without them.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

from chatbot.core.config import Settings
from chatbot.core.errors import RagtuneError, TrainingDataError

REFUSAL = "I don't know. The help centre does not cover this."
STRATEGIES = (["zero-shot"] * 14) + (["few-shot"] * 3) + (["cot"] * 3)
EXCERPT_WORDS = 90  # answers quote the passage up to this many words (see the module docstring)
MOVE_GOLD = 0.35  # share of answerable pairs whose gold passage is put at a random place (see `_context`)
PLAIN = 0.15  # share of answerable seeds also asked without context
PLAIN_REFUSE = 0.15  # share of out-of-scope seeds also asked without context


def build_pairs(seeds: list[dict[str, Any]], retriever: Any, *, top_k: int, seed: int = 0) -> list[dict[str, Any]]:
    """Training pairs (the `{"question", "answer", "context", "strategy"}` form) for every seed."""
    rng = random.Random(seed)
    pairs: list[dict[str, Any]] = []
    for item in seeds:
        found = retriever.retrieve(item["question"], k=top_k + 4)
        if item["source"] is None:
            pairs.append(_pair(item["question"], found[:top_k], REFUSAL, rng))
            if rng.random() < PLAIN_REFUSE:
                pairs.append({"question": item["question"], "answer": REFUSAL, "context": None})
            continue
        gold = _gold(item, retriever)
        shown = _context(found, gold, top_k, rng)
        cited = next((hit for hit in shown if _holds(hit.text, item["quote"])), gold)
        answer = _lead(_excerpt(cited.text, item["quote"]) or item["answer"], shown.index(cited) + 1)
        pairs.append(_pair(item["question"], shown, answer, rng, evidence=item["quote"]))
        if rng.random() < PLAIN:
            pairs.append({"question": item["question"], "answer": item["answer"], "context": None})
    rng.shuffle(pairs)
    return pairs


def _context(found: list[Any], gold: Any, top_k: int, rng: random.Random) -> list[Any]:
    """The passages the engine would show, in the retriever's order, with the gold one surely among them.

    Where retrieval ranks it, the gold passage mostly keeps its rank (so [1] is about as often
    right as it is in use); where it does not, and in a share `MOVE_GOLD` of pairs, it takes a
    random place among the distractors. Kept at its rank always, [1] held the answer in 72% of
    pairs, and the adapter refused questions whose answer was in [2] or [3]. One time in five a
    distractor is dropped, as a score threshold would.
    """
    shown = found[:top_k]
    if all(hit.chunk_id != gold.chunk_id for hit in shown) or rng.random() < MOVE_GOLD:
        shown = [hit for hit in found if hit.chunk_id != gold.chunk_id][: top_k - 1]
        shown.insert(rng.randint(0, len(shown)), gold)
    if len(shown) > 1 and rng.random() < 0.2:
        shown.pop(rng.choice([n for n, hit in enumerate(shown) if hit.chunk_id != gold.chunk_id]))
    return shown


def _pair(question: str, hits: list[Any], answer: str, rng: random.Random, evidence: str | None = None) -> dict:
    strategy = rng.choice(STRATEGIES)
    if strategy == "cot":
        if evidence:
            number = re.findall(r"\[(\d+)\]", answer)[-1]
            reasoning = f'Passage [{number}] says: "{evidence}"'
        else:
            reasoning = "None of the passages answers this question."
        answer = f"Reasoning: {reasoning}\nAnswer: {answer}"
    context = [{"title": hit.title, "section": hit.section, "text": hit.text} for hit in hits]
    return {"question": question, "answer": answer, "context": context, "strategy": strategy}


def _gold(item: dict[str, Any], retriever: Any) -> Any:
    """The chunk of the seed's page that holds its quote."""
    hits = retriever.retrieve(item["quote"], k=5, sources=[item["source"]])
    if not hits:
        raise TrainingDataError(f"seed {item['question']!r}: {item['source']} is not in the collection; ingest it.")
    return next((hit for hit in hits if _holds(hit.text, item["quote"])), hits[0])


def _excerpt(text: str, quote: str, limit: int = EXCERPT_WORDS) -> str | None:
    """The passage's own words for `quote`: its paragraph from the start, up to `limit` words, or,
    when the quote lies later, the lines or sentences nearest it. None when no paragraph holds it."""
    paragraph = next((part for part in re.split(r"\n\s*\n", text) if _holds(part, quote)), None)
    if paragraph is None:
        return None
    lines = [line.strip() for line in paragraph.strip().splitlines() if line.strip()]
    units = lines if len(lines) > 1 else re.split(r"(?<=[.!?])\s+", lines[0])
    start = next(n for n in range(len(units), 0, -1) if _holds(" ".join(units[n - 1 :]), quote)) - 1
    end = next(n for n in range(start + 1, len(units) + 1) if _holds(" ".join(units[start:n]), quote))
    words = [len(unit.split()) for unit in units]
    if sum(words[:end]) <= limit:  # the quote lies early enough: copy from the paragraph's start
        start = 0
    while end < len(units) and sum(words[start : end + 1]) <= limit:
        end += 1
    while start > 0 and sum(words[start - 1 : end]) <= limit:
        start -= 1
    return ("\n" if len(lines) > 1 else " ").join(units[start:end])


def _holds(text: str, quote: str) -> bool:
    return _words(quote) in _words(text)


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _lead(answer: str, number: int) -> str:
    """The answer led by its citation on a line of its own: "According to [2]:\n<the passage's words>".

    One lead for every shape of passage: with "According to [n], " before prose and
    "According to [n]:" before a list, an adapter opened all its answers with the
    commoner "According to [1]," and, bound to prose after the comma, copied a prose passage
    other than [1] under 6 of its 19 list-shaped [1]s on the sample set (recall 0.29 on such
    answers, 0.68 where it copied the passage it cited). A bare "Yes." or "No." opener is
    dropped: the sentence after it carries the answer, and an adapter that learnt to open
    with "no." said it to questions that were not yes/no.
    """
    return f"According to [{number}]:\n" + re.sub(r"^(Yes|No)\.\s+", "", answer.strip())


def load_seeds(path: Path) -> list[dict[str, Any]]:
    """Seed questions, checked line by line."""
    seeds = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item.get("question"), str):
                raise ValueError("no question")
            if item.get("source") is not None and not (item.get("answer") and item.get("quote")):
                raise ValueError("an answerable seed needs answer and quote")
        except (json.JSONDecodeError, ValueError, AttributeError) as error:
            raise TrainingDataError(f"{path}, line {number}: {error}.") from error
        seeds.append(item)
    return seeds


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m adapters.training.examples`."""
    parser = argparse.ArgumentParser(prog="python -m adapters.training.examples", description=__doc__.splitlines()[0])
    parser.add_argument("seeds", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from chatbot.llm.loading import load_embeddings
    from chatbot.rag.retrieval import Retriever
    from chatbot.rag.store import Store

    try:
        settings = Settings.from_env()
        seeds = load_seeds(args.seeds)
        store = Store.open(settings)
        try:
            store.require_points()
            retriever = Retriever(store, load_embeddings(settings), top_k=settings.top_k)
            pairs = build_pairs(seeds, retriever, top_k=settings.top_k, seed=args.seed)
        finally:
            store.close()
    except RagtuneError as error:
        print(f"adapters.training.examples: {error}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs))
    refusals = sum(pair["answer"].endswith(REFUSAL) for pair in pairs)
    print(f"{len(pairs)} pairs ({refusals} refusals) from {len(seeds)} seeds -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
