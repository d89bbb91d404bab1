"""Choose where an adapter refuses, on a dev set, and write it to the adapter's card.

`python -m adapters.training.calibrate QUESTIONS.jsonl --adapter NAME [--dry-run]`

Under greedy decoding the first generated token decides between the refusal ("I don't
know. ...") and an answer ("According to [n]:\n...", see adapters/training/examples.py). For each
question the engine does not abstain on, this measures the adapter's margin there, log P("I")
- log P("According") with retrieval on (above 0: it refuses), prints it, and picks the boundary
that best separates the set: the most unanswerable questions refused minus answerable ones
refused (engine abstentions count as refused), nearest 0 among ties, halfway between the two
margins around it. The card then gets `first_token_bias: {REFUSAL: -boundary}`, which the
chat model adds at the first token whenever that adapter answers, so it refuses only where
the margin is above the boundary.

Why a boundary and not only more data: the refusal share of the training pairs moves the
whole boundary at once (a few points more refusals in the pairs trade many false refusals for
a few more true ones; bench/eval/experiments/README.md has the measurements), and one retrain
costs ~25 minutes where this costs one forward pass per question. Choose it on questions neither the seeds nor the evaluation
sets ask (`data/training/dev_qa.jsonl`), or the evaluation numbers stop meaning anything.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from tabulate import tabulate

from adapters.card import CARD_FILE
from adapters.training.examples import REFUSAL
from chatbot.core.errors import RagtuneError
from chatbot.options import AnswerOptions

ANSWER_LEAD = "According"
TABLE_BOUNDARIES = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)


def margins(engine: Any, questions: list[Any], adapter: str) -> dict[str, list[float | None]]:
    """Each question's first-token margin with `adapter` on, by kind; None where the engine abstains."""
    chat_model = engine.chat_model
    refuse, answer = (chat_model.get_token_ids(text)[0] for text in (REFUSAL, ANSWER_LEAD))
    found: dict[str, list[float | None]] = {"answerable": [], "unanswerable": []}
    for question in questions:
        prepared = engine.prepare(question.question, options=AnswerOptions(adapter=adapter))
        margin = None
        if not prepared.abstain_reason:
            scores = chat_model.next_token_logprobs(list(prepared.messages), adapter=adapter)
            margin = float(scores[refuse] - scores[answer])
        kind = "answerable" if question.answerable else "unanswerable"
        found[kind].append(margin)
        print(f"{question.id}\t{kind}\t{_show(margin)}")
    return found


def refused(found: list[float | None], boundary: float) -> float:
    """The share refused when refusing above `boundary` (abstentions count as refused)."""
    return sum(m is None or m > boundary for m in found) / max(1, len(found))


def best_boundary(found: dict[str, list[float | None]]) -> float:
    """The boundary with the most unanswerable refused minus answerable refused; nearest 0 among ties."""
    known = sorted({m for kind in found.values() for m in kind if m is not None})
    if not known:
        return 0.0
    candidates = [known[0] - 0.5, known[-1] + 0.5, 0.0] + [(a + b) / 2 for a, b in pairwise(known)]

    def score(boundary: float) -> tuple[float, float]:
        return refused(found["unanswerable"], boundary) - refused(found["answerable"], boundary), -abs(boundary)

    return round(max(candidates, key=score), 2)


def boundary_table(found: dict[str, list[float | None]], chosen: float) -> str:
    """A markdown table: what each boundary (the usual ones and the chosen one) refuses."""
    rows = []
    for b in sorted({*TABLE_BOUNDARIES, chosen}):
        mark = " (chosen)" if b == chosen else ""
        rows.append(
            [f"{b:+.2f}{mark}", f"{refused(found['unanswerable'], b):.2f}", f"{refused(found['answerable'], b):.2f}"]
        )
    headers = ["boundary", "refuses unanswerable", "false refusals"]
    return tabulate(rows, headers=headers, tablefmt="pipe", colalign=("left", "right", "right"), disable_numparse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", type=Path, help="a question set (DESIGN.md format) the adapter never saw")
    parser.add_argument("--adapter", required=True, help="a loaded adapter's name")
    parser.add_argument("--dry-run", action="store_true", help="print the margins and the boundary, change nothing")
    args = parser.parse_args(argv)

    from chatbot.build import build_engine
    from chatbot.core.config import Settings
    from chatbot.eval.questions import load_questions

    try:
        questions = load_questions(args.questions)
        # The transformers runtime: the margins are read off its logits (OpenVINO GenAI returns none).
        with build_engine(replace(Settings.from_env(), llm_runtime="transformers")) as engine:
            info = next((info for info in engine.adapters() if info.name == args.adapter and info.loaded), None)
            if info is None or info.path is None:
                names = ", ".join(repr(i.name) for i in engine.adapters() if i.loaded) or "none"
                raise RagtuneError(f"No local adapter named {args.adapter!r} is loaded (loaded: {names}).")
            found = margins(engine, questions, args.adapter)
    except RagtuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    boundary = best_boundary(found)
    print(f"\n{args.questions}, adapter {args.adapter}: refuse when the margin is above the boundary (0 = greedy)")
    print(boundary_table(found, boundary))
    if args.dry_run:
        return 0
    folder = Path(info.path)
    calibration = {
        "questions": str(args.questions),
        "boundary": boundary,
        "refuses_unanswerable": round(refused(found["unanswerable"], boundary), 2),
        "false_refusals": round(refused(found["answerable"], boundary), 2),
    }
    # The card the engine read, with the new boundary.
    replace(info.card, first_token_bias={REFUSAL: -boundary}, calibration=calibration).write(folder)
    print(f"wrote first_token_bias {{{REFUSAL!r}: {-boundary}}} to {folder / CARD_FILE}")
    return 0


def _show(margin: float | None) -> str:
    return "abstained" if margin is None else f"{margin:+.2f}"


if __name__ == "__main__":
    sys.exit(main())
