"""The shipped adapter's training pairs: built from seeds with a retriever, shaped like the engine's prompts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from adapters.training.examples import REFUSAL, _excerpt, _holds, _lead, _words, build_pairs, load_seeds
from chatbot.core.errors import TrainingDataError
from chatbot.eval.questions import load_questions
from chatbot.rag.retrieval import Hit


def _hit(source: str, number: int, text: str) -> Hit:
    return Hit(source, source.title(), "", 1.0 / number, f"{source}#{number}", text, 0.5)


QUOTES = {("pricing.md", 2): "Growth costs $49 a month.", ("returns.md", 3): "Returns are free for 30 days."}


class FakeRetriever:
    """Three pages of three chunks, in a fixed order: pricing.md's quote ranks second, returns.md's last."""

    def __init__(self) -> None:
        self.chunks = [
            _hit(page, n, QUOTES.get((page, n), f"{page} text {n}"))
            for page in ("pricing.md", "batches.md", "returns.md")
            for n in (1, 2, 3)
        ]

    def retrieve(self, query: str, k: int, sources: list[str] | None = None) -> list[Hit]:
        return [hit for hit in self.chunks if sources is None or hit.source in sources][:k]


SEEDS = [
    {"question": f"how much is growth {n}?", "answer": "The Growth plan is $49 a month.",
     "source": "pricing.md", "quote": "Growth costs $49 a month", "kind": "fact"}
    for n in range(40)
] + [{"question": f"do you sell stamps {n}?", "answer": None, "source": None, "quote": None} for n in range(5)]  # fmt: skip


def test_answers_are_led_by_the_citation_of_the_passage_holding_the_quote():
    pairs = build_pairs(SEEDS, FakeRetriever(), top_k=4)
    answered = [p for p in pairs if p["context"] and not p["answer"].endswith(REFUSAL)]
    assert len(answered) == 40
    for pair in answered:
        answer = pair["answer"].split("Answer: ")[-1]
        number = int(answer.removeprefix("According to [").split("]")[0])
        assert pair["context"][number - 1]["text"] == "Growth costs $49 a month."
        assert answer.endswith("]:\nGrowth costs $49 a month.")  # the passage's own words
        if pair["strategy"] == "cot":
            assert pair["answer"].startswith(f'Reasoning: Passage [{number}] says: "Growth costs $49 a month"')


def test_the_gold_passage_mostly_keeps_its_retrieved_rank_or_is_put_among_the_distractors():
    returns = [{"question": f"returns {n}?", "answer": "Returns are free.", "source": "returns.md",
                "quote": "Returns are free for 30 days", "kind": "fact"} for n in range(40)]  # fmt: skip
    pairs = build_pairs(SEEDS[:40] + returns, FakeRetriever(), top_k=4)
    cited = {"how": Counter(), "returns": Counter()}
    for pair in pairs:
        if pair["context"]:
            number = int(pair["answer"].split("According to [")[1][0])
            assert pair["context"][number - 1]["text"] in QUOTES.values()
            assert 3 <= len(pair["context"]) <= 4
            cited[pair["question"].split()[0]][number] += 1
    assert cited["how"].most_common(1)[0][0] == 2  # mostly its rank (or 1 when the distractor above it was dropped)
    assert len(cited["how"]) >= 3  # sometimes moved elsewhere
    assert set(cited["returns"]) == {1, 2, 3, 4}  # not retrieved (9th of 9): placed at random


def test_refusals_are_a_minority_for_the_out_of_scope_questions():
    pairs = build_pairs(SEEDS, FakeRetriever(), top_k=4)
    refusals = [p for p in pairs if p["answer"].endswith(REFUSAL)]
    assert 5 <= len(refusals) < len(pairs) / 4
    assert all(p["question"].startswith("do you sell stamps") for p in refusals)


def test_the_same_seed_gives_the_same_pairs():
    assert build_pairs(SEEDS, FakeRetriever(), top_k=4, seed=3) == build_pairs(SEEDS, FakeRetriever(), top_k=4, seed=3)


def test_lead_is_the_same_for_prose_and_lists():
    assert _lead("Starter includes 50 labels.", 2) == "According to [2]:\nStarter includes 50 labels."
    assert _lead("- **A** one.\n- B.", 3) == "According to [3]:\n- **A** one.\n- B."
    assert _lead("Yes. It does.", 1) == "According to [1]:\nIt does."  # a bare yes/no opener is dropped
    assert _lead("Yes, on Growth.", 1) == "According to [1]:\nYes, on Growth."


def test_excerpt_copies_the_paragraph_from_its_start_or_the_lines_nearest_a_late_quote():
    text = "Intro.\n\n- **A** one.\n- B two holds the quote.\n- C three.\n\nOther paragraph. Two."
    assert _excerpt(text, "B two holds the quote") == "- **A** one.\n- B two holds the quote.\n- C three."
    assert _excerpt(text, "B two holds the quote", limit=9) == "- **A** one.\n- B two holds the quote."
    assert _excerpt(text, "B two holds the quote", limit=8) == "- B two holds the quote."
    assert _excerpt("One here. Two holds X. Three.", "holds X", limit=5) == "One here. Two holds X."
    assert _excerpt("One here. Two holds X. Three.", "holds X", limit=4) == "Two holds X. Three."
    assert _excerpt(text, "Intro. A one") is None  # across paragraphs: the seed's own answer is used


def test_a_bad_seed_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps(SEEDS[0]) + "\n" + json.dumps({"question": "q", "source": "a.md"}) + "\n")
    with pytest.raises(TrainingDataError, match="line 2"):
        load_seeds(path)


def test_the_shipped_seeds_quote_their_pages_and_never_ask_a_held_out_question():
    """`make adapter` needs every quote on its page; the evaluation and dev sets must stay unseen."""
    seeds = load_seeds(Path("data/training/seed_questions.jsonl"))
    for seed in seeds:
        if seed["source"] is not None:
            assert _holds(Path("data/kb", seed["source"]).read_text(encoding="utf-8"), seed["quote"]), seed
    asked = {_words(seed["question"]) for seed in seeds}
    for path in ("data/kb_qa.jsonl", "data/training/dev_qa.jsonl", "tests/data/plausible_qa.jsonl"):
        assert not asked & {_words(q.question) for q in load_questions(path)}, path
