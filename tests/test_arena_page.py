"""The Arena page, headless through AppTest, over the real engine with a fake chat model (see test_app.py).

A blind vote end to end: the labels stay hidden until the vote, the order is the
seeded draw's, the vote lands in the SQLite file and counts in the leaderboard.
"""

from __future__ import annotations

import random

import pytest
from streamlit.testing.v1 import AppTest
from test_app import UI, kb_dir, make_engine, store, use_engine  # noqa: F401 (fixtures)

from chatbot.core.config import Settings
from chatbot.eval.votes import VoteStore, votes_path
from chatbot.options import AnswerOptions
from ui import arena
from ui.safe_markdown import plain

ARENA = str(UI / "views" / "arena.py")
QUESTION = "How long do refunds for unused labels take?"
OFF = AnswerOptions(use_retrieval=False).label
ON = AnswerOptions().label
LABEL_WORDS = ("retrieval on", "retrieval off", "base model", "adapter support", "Zero-shot")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def engine(store, use_engine, cache_dir):  # noqa: F811
    engine = make_engine(store, replies=["Refunds take 5 days [1].", "Five business days."])
    use_engine(engine)  # also clears the cached settings, so RAG_CACHE_DIR is read again
    return engine


def shown_text(app: AppTest) -> str:
    """Everything the page shows as text, widgets' labels included."""
    kinds = ("markdown", "caption", "info", "success", "warning", "error")
    return "\n".join([e.value for kind in kinds for e in app.get(kind)] + [e.label for e in app.expander])


def start_round(seed: int, question: str = QUESTION) -> AppTest:
    arena.SEED = seed
    app = AppTest.from_file(ARENA, default_timeout=30).run()
    assert not app.exception, app.exception
    assert app.multiselect(key="arena_chosen").value == [OFF, ON]
    app.text_input(key="arena_question").set_value(question)
    click(app, "Answer")
    assert not app.exception, app.exception
    return app


@pytest.fixture(autouse=True)
def unseeded():
    yield
    arena.SEED = None


def click(app: AppTest, label: str) -> AppTest:
    next(button for button in app.button if button.label == label).click()
    app.run()
    assert not app.exception, app.exception
    return app


def titles(app: AppTest) -> list[str]:
    return [m.value for m in app.markdown if m.value.startswith("##### ")]


def test_a_blind_vote_hides_the_labels_until_the_vote_then_stores_and_counts_it(engine, cache_dir):
    app = start_round(seed=3)
    expected = arena.draw(random.Random(3), [AnswerOptions(use_retrieval=False), AnswerOptions()])

    assert titles(app) == ["##### A", "##### B"]
    before = shown_text(app)
    assert not [word for word in LABEL_WORDS if word in before], before
    assert len(engine.chat_model.calls) == 2
    assert not [e for e in app.expander if e.label == "Prompt"]  # the prompt would name the strategy

    click(app, "B is better")
    assert titles(app) == [f"##### A · {plain(expected[0].label)}", f"##### B · {plain(expected[1].label)}"]
    assert "Vote stored: B is better." in shown_text(app)

    votes = VoteStore(votes_path(Settings(cache_dir=cache_dir))).all()
    assert len(votes) == 1
    vote = votes[0]
    assert (vote.a.label, vote.b.label, vote.outcome.value) == (expected[0].label, expected[1].label, "b")
    assert vote.question == QUESTION
    assert vote.model["name"] == "fake-135M"
    assert vote.collection["name"] == "kb" and vote.collection["chunks"] == 3
    assert [hit["source"] for hit in (vote.a if expected[0].use_retrieval else vote.b).answer["sources"]]
    board = {row["configuration"]: row for row in app.dataframe[0].value.to_dict("records")}
    assert board[expected[1].label]["wins"] == 1 and board[expected[0].label]["losses"] == 1
    assert "Too wide to rank" in shown_text(app)
    assert [b.proto.label for b in app.get("download_button")] == ["Download the votes (jsonl)"]


def test_the_order_follows_the_seeded_draw(engine):
    orders = {}
    for seed in range(6):
        orders[seed] = arena.draw(random.Random(seed), [AnswerOptions(use_retrieval=False), AnswerOptions()])
    firsts = {seed: order[0].label for seed, order in orders.items()}
    assert set(firsts.values()) == {OFF, ON}  # the draw really varies the order
    for seed in (next(s for s in firsts if firsts[s] == ON), next(s for s in firsts if firsts[s] == OFF)):
        app = start_round(seed)
        click(app, "Tie")
        assert titles(app)[0] == f"##### A · {plain(firsts[seed])}"
        with_context = "<context>" in str(engine.chat_model.calls[-2]["messages"][-1].content)
        assert with_context == (firsts[seed] == ON)  # A streamed first, and it is the configuration named A
