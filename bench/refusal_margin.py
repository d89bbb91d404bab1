"""Where an adapter decides to refuse: its first-token margin for each question of a set.

Under greedy decoding the first generated token decides between the refusal ("I don't
know. ...") and an answer ("According to [n]:\n..."), see adapters/examples.py. For each
question the engine does not abstain on, this prints log P("I") - log P("According") at that
token with the adapter on (above 0: it refuses), then what moving the boundary would trade:
the share of unanswerable questions refused (engine abstentions count as refused) against
the share of answerable ones refused, for a few boundaries. Where the two kinds' margins
overlap, no boundary gets both right.

Run from the repo root against an ingested collection:
    python bench/refusal_margin.py data/kb_qa.jsonl
    RAG_QDRANT_PATH=.ragtune/plausible RAG_COLLECTION=plausible RAG_PRODUCT="Plausible Analytics" \\
        python bench/refusal_margin.py tests/data/plausible_qa.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import table

from adapters.examples import REFUSAL
from chatbot.config import Settings
from chatbot.engine import build_engine
from chatbot.questions import load_questions

BOUNDARIES = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)


def main(path: Path, adapter: str) -> None:
    engine = build_engine(Settings.from_env())
    try:
        chat_model, tokenizer = engine.chat_model, engine.chat_model.tokenizer
        refuse, answer = (tokenizer.encode(text, add_special_tokens=False)[0] for text in (REFUSAL, "According"))
        margins: dict[str, list[float | None]] = {"answerable": [], "unanswerable": []}
        for question in load_questions(path):
            kind = "answerable" if question.answerable else "unanswerable"
            state = engine.prepare(question.question, adapter=adapter)
            if state["abstain_reason"]:
                margins[kind].append(None)
                print(f"{question.id}\t{kind}\tabstained")
                continue
            scores = chat_model.next_token_logprobs(state["messages"], adapter=adapter)
            margin = float(scores[refuse] - scores[answer])
            margins[kind].append(margin)
            print(f"{question.id}\t{kind}\t{margin:+.2f}")
    finally:
        engine.close()

    def refused(kind: str, boundary: float) -> str:
        found = margins[kind]
        return f"{sum(m is None or m > boundary for m in found) / max(1, len(found)):.2f}"

    print(f"\n{path}, adapter {adapter}: refuse when the margin is above the boundary (0 = greedy)")
    rows = [[f"{b:+.1f}", refused("unanswerable", b), refused("answerable", b)] for b in BOUNDARIES]
    print(table(["boundary", "refuses unanswerable", "false refusals"], rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", type=Path)
    parser.add_argument("--adapter", default="support-rag")
    args = parser.parse_args()
    main(args.questions, args.adapter)
