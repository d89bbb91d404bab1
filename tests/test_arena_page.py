"""The Arena page, headless through AppTest, over the real engine with a fake chat model (see test_app.py).

A blind vote end to end: the labels stay hidden until the vote, the order is the
seeded draw's, the vote lands in the SQLite file and counts in the leaderboard.
"""

from __future__ import annotations

import json
import random

import pytest
from fakes import FakeEmbeddings
from streamlit.testing.v1 import AppTest
from test_app import (  # noqa: F401 (fixtures)
    EVIL,
    UI,
    hostile_engine,
    images_shown,
    kb_dir,
    make_engine,
    store,
    use_engine,
)

from adapters.registry import AdapterInfo
from chatbot.core.config import Settings
from chatbot.core.errors import StoreLockedError
from chatbot.eval.vote_store import VoteStore, votes_path
from chatbot.eval.votes import changed_since
from chatbot.options import AnswerOptions
from ingest.pipeline import ingest_paths
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


def test_a_question_drawn_from_a_set_and_an_added_configuration_are_voted_on(engine, cache_dir, tmp_path):
    qa = tmp_path / "qa.jsonl"
    lines = [
        {"id": "r1", "question": QUESTION, "answer": "5 days", "must_include": ["5"], "source": "refunds.md",
         "kind": "fact"},
        {"id": "p1", "question": "What does Growth cost?", "answer": "$49", "must_include": ["49"],
         "source": "plans.md", "kind": "fact"},
    ]  # fmt: skip
    qa.write_text("".join(json.dumps(line) + "\n" for line in lines))
    arena.SEED = 11
    rng = random.Random(11)
    expected_question = rng.choice(lines)
    top_two = AnswerOptions(top_k=2, adapter="support")
    expected = arena.draw(rng, [AnswerOptions(use_retrieval=False), top_two])

    app = AppTest.from_file(ARENA, default_timeout=30).run()
    app.multiselect(key="arena_chosen").unselect(ON)
    app.selectbox(key="arena_new_adapter").set_value("support")
    app.slider(key="arena_new_top_k").set_value(2)
    click(app, "Add")
    assert app.multiselect(key="arena_chosen").value == [OFF, top_two.label]
    app.text_input(key="arena_set").set_value(str(qa))
    click(app, "Draw a question")
    assert app.text_input(key="arena_question").value == expected_question["question"]
    click(app, "Answer")
    click(app, "Both bad")

    vote = VoteStore(votes_path(Settings(cache_dir=cache_dir))).all()[0]
    assert vote.question_id == expected_question["id"]
    assert (vote.a.config, vote.b.config) == expected
    assert [call["adapter"] for call in engine.chat_model.calls] == [o.adapter for o in expected]
    tuned = vote.a if vote.a.config.adapter else vote.b
    assert tuned.adapter == "support"  # its identity (no folder here to hash: the name)
    assert len(tuned.answer["sources"]) == 2


def test_a_vote_can_be_traced_and_asked_again(engine, cache_dir, kb_dir, store):  # noqa: F811
    click(start_round(seed=0), "A is better")
    vote = VoteStore(votes_path(Settings(cache_dir=cache_dir))).all()[0]
    assert changed_since(engine, vote) == []

    again = engine.answer(vote.question, **vote.a.config.kwargs())
    assert again.use_retrieval == vote.a.config.use_retrieval

    (kb_dir / "returns.md").write_text("# Returns\n\nReturn labels are free on the Pro plan.\n")
    ingest_paths([kb_dir], Settings(), store=store, embeddings=FakeEmbeddings())
    assert changed_since(engine, vote) == ["collection"]


def test_a_locked_store_is_a_message_on_the_arena(use_engine, cache_dir):  # noqa: F811
    use_engine(StoreLockedError("The local Qdrant store .ragtune/qdrant is in use by another process."))
    app = AppTest.from_file(ARENA, default_timeout=30).run()
    assert not app.exception
    assert app.error[0].value.startswith("The local Qdrant store .ragtune/qdrant is in use")


def test_questions_and_answers_render_no_images(hostile_engine, cache_dir):  # noqa: F811
    app = start_round(seed=1, question=f"Refunds? ![q]({EVIL}/question.png)")
    click(app, "Tie")
    assert images_shown(app) == []
    assert "question\\.png" in shown_text(app)  # shown as text
    assert "answer.png" in shown_text(app)


def test_the_offered_configurations_name_the_served_base_as_no_adapter():
    adapters = [
        AdapterInfo("support"),
        AdapterInfo("broken", loaded=False),
        AdapterInfo("support", served=True),
        AdapterInfo("SmolLM2", served=True),
    ]
    offered = arena.offered(adapters, served_base="SmolLM2")
    models = {(o.adapter, o.served) for o in offered}
    assert models == {(None, False), ("support", False), ("support", True), (None, True)}
    assert len(offered) == 2 * 4 * 3  # retrieval off/on x four models x three strategies
    assert "retrieval off · served model · Zero-shot" in {o.label for o in offered}
