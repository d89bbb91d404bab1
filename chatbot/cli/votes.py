"""`rag-eval QA.jsonl --votes VOTES`: the arena's votes read against a question set's automatic metrics.

No model is loaded: the votes hold both answers and the passages each was given, so
the metrics are computed from them as `rag-eval` computes them from its cache.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from chatbot.core.errors import RagtuneError


def report_votes(votes_file: Path, questions_file: Path, *, as_json: bool = False) -> int:
    """Print where people and the metrics disagree; the exit code (0, or 1 for an unreadable file)."""
    from chatbot.eval.disagree import disagreements
    from chatbot.eval.questions import load_questions
    from chatbot.eval.vote_store import load_votes

    try:
        questions = load_questions(questions_file)
        votes = load_votes(votes_file)
    except RagtuneError as error:
        print(f"rag-eval: {error}", file=sys.stderr)
        return 1
    found = disagreements(votes, questions)
    print(json.dumps(found.to_json(), ensure_ascii=False) if as_json else found.to_markdown())
    if not found.readings:
        print(
            f"rag-eval: none of the {len(votes)} votes is on a question of {questions_file}: "
            "draw the arena's questions from this set to compare them with its metrics.",
            file=sys.stderr,
        )
    return 0
