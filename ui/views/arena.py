"""Arena: two of the chosen configurations answer one question, blind; the user votes, then sees which was which.

Both answers are laid out alike (text, then the same sources list and timing caption),
under "A" and "B" only; the prompt and the settings label stay hidden until the vote.
The two answers stream one after another in the script thread (the model holds a
lock for a whole stream, as on the Compare page), and a finished duel is kept in the
session, so a rerun redraws it without asking again. Votes go to the SQLite file
under RAG_CACHE_DIR that every session and server process shares.
"""

from __future__ import annotations

import random

import streamlit as st

from chatbot.core.errors import RagtuneError
from chatbot.eval.questions import load_questions
from chatbot.eval.ratings import leaderboard
from chatbot.eval.vote_store import VoteStore, votes_path
from chatbot.eval.votes import Outcome, record_vote, to_jsonl
from chatbot.options import AnswerOptions
from ui import arena
from ui.common import (
    STRATEGY_LABELS,
    adapter_label,
    app_settings,
    engine_or_stop,
    loaded_adapters,
    render_details,
    run_guarded,
    show_error,
    stream_answer,
)
from ui.safe_markdown import plain, safe_markdown

QUESTION_SET = "data/kb_qa.jsonl"
VOTES = {Outcome.A: "A is better", Outcome.B: "B is better", Outcome.TIE: "Tie", Outcome.BOTH_BAD: "Both bad"}

st.set_page_config(page_title="ragtune · Arena", layout="wide")
st.title("Arena")
st.caption(
    "Two of the configurations you pick answer the same question, shown as A and B in random order. "
    "Vote for the better answer; only then are the configurations named."
)
engine = engine_or_stop()
store = run_guarded(lambda: VoteStore(votes_path(app_settings())))
if store is None:
    st.stop()
rng: random.Random = st.session_state.setdefault("arena_rng", random.Random(arena.SEED))
adapters = loaded_adapters(engine)
served_base = engine.served.model_name if engine.served is not None else None
offered = {options.label: options for options in arena.offered(engine.adapters(), served_base=served_base)}
offered |= st.session_state.setdefault("arena_added", {})
st.session_state.setdefault("arena_chosen", [label for label, o in offered.items() if o.adapter is None][:2])
# A chosen adapter can be gone (the server restarted without it): a multiselect value must be one of its options.
st.session_state.arena_chosen = [label for label in st.session_state.arena_chosen if label in offered]
st.session_state.setdefault("arena_set", QUESTION_SET)


def add_configuration() -> None:
    """The form's configuration, added to the offered ones and chosen."""
    info = adapters.get(st.session_state.arena_new_adapter)
    options = AnswerOptions(
        use_retrieval=st.session_state.arena_new_retrieval,
        adapter=None if info is None or (info.served and info.name == served_base) else info.name,
        served=bool(info and info.served),
        strategy=st.session_state.arena_new_strategy,
        top_k=st.session_state.arena_new_top_k,
    )
    st.session_state.arena_added[options.label] = options
    if options.label not in st.session_state.arena_chosen:
        st.session_state.arena_chosen = [*st.session_state.arena_chosen, options.label]


def draw_question() -> None:
    """A question at random from the question set, into the question box."""
    try:
        question = rng.choice(load_questions(st.session_state.arena_set))
    except RagtuneError as error:
        st.session_state.arena_problem = str(error)
        return
    st.session_state.arena_problem = None
    st.session_state.arena_question = question.question
    st.session_state.arena_drawn = question


def cast(duel: arena.Duel, outcome: Outcome) -> bool:
    """Store the vote on `duel` (both answers in) with the engine's identities."""
    shown = tuple(zip(duel.shown, duel.answers, strict=True))
    return store.add(record_vote(engine, duel.question, shown, outcome, question_id=duel.question_id))


chosen = st.multiselect("Configurations", list(offered), key="arena_chosen", help="Two of them answer each round")
with st.expander("Add a configuration (top-k, ...)", icon=":material/add:"), st.form("arena-add", border=False):
    left, middle, right = st.columns(3)
    left.toggle("Use retrieval", value=True, key="arena_new_retrieval")
    left.slider("Passages (top-k)", 1, max(10, engine.retriever.top_k), engine.retriever.top_k, key="arena_new_top_k")
    middle.selectbox("Adapter", ["", *adapters], format_func=adapter_label, key="arena_new_adapter")
    right.selectbox(
        "Prompt strategy", list(STRATEGY_LABELS), format_func=STRATEGY_LABELS.__getitem__, key="arena_new_strategy"
    )
    st.form_submit_button("Add", on_click=add_configuration)

question = st.text_input("Question", key="arena_question", placeholder="How long do refunds take?")
left, right = st.columns([3, 1], vertical_alignment="bottom")
left.text_input("Question set", key="arena_set", help="A jsonl question set to draw from")
right.button("Draw a question", icon=":material/casino:", on_click=draw_question, width="stretch")
if problem := st.session_state.get("arena_problem"):
    show_error(problem)

if st.button("Answer", type="primary", icon=":material/swords:"):
    if len(chosen) < 2:
        st.warning("Pick at least two configurations.")
    elif not question.strip():
        st.warning("Type a question or draw one.")
    else:
        drawn = st.session_state.get("arena_drawn")
        st.session_state.arena_duel = arena.Duel(
            question.strip(),
            arena.draw(rng, [offered[label] for label in chosen]),
            question_id=drawn.id if drawn and drawn.question == question.strip() else None,
        )

duel: arena.Duel | None = st.session_state.get("arena_duel")
if duel is not None:
    st.markdown(f"**{plain(duel.question)}**")
    boxes = [
        column.container(border=True, key=f"arena-side-{letter}")
        for column, letter in zip(st.columns(2), "AB", strict=True)
    ]
    for side, box in enumerate(boxes):
        box.markdown(f"##### {plain(duel.title(side))}")
    for side, box in enumerate(boxes):
        with box:
            if duel.answers[side] is None and duel.errors[side] is None:
                try:
                    duel.answers[side] = stream_answer(engine, duel.question, [], duel.shown[side])
                except RagtuneError as error:
                    duel.errors[side] = str(error)
            elif duel.answers[side] is not None:
                st.markdown(safe_markdown(duel.answers[side].text))
            if duel.errors[side]:
                show_error(duel.errors[side])
            else:
                render_details(duel.answers[side], None, compact=True)

    if duel.outcome is None and duel.answered:
        st.caption("Which answer is better?")
        for column, (outcome, text) in zip(st.columns(len(VOTES)), VOTES.items(), strict=True):
            if column.button(text, key=f"vote-{outcome.value}", width="stretch"):
                stored = run_guarded(lambda chosen_outcome=outcome: cast(duel, chosen_outcome))
                if stored is not None:
                    duel.outcome = outcome.value
                    st.rerun()  # redraw with the labels shown
    elif duel.outcome is None:
        st.info("One configuration could not answer, so this round cannot be voted on: press Answer again.")
    else:
        st.success(f"Vote stored: {VOTES[Outcome(duel.outcome)]}.", icon=":material/how_to_vote:")

st.subheader("Leaderboard")
votes = run_guarded(store.all)
if votes is not None:
    board = leaderboard(votes)
    if board.standings:
        st.dataframe(board.rows(), hide_index=True)
    st.info(plain(board.note), icon=":material/leaderboard:")
    st.download_button(
        "Download the votes (jsonl)",
        to_jsonl(votes),
        file_name="votes.jsonl",
        mime="application/jsonl",
        on_click="ignore",
        icon=":material/download:",
        disabled=not votes,
    )
    st.caption(
        f"Votes are kept in {plain(str(store.path))}; `rag-eval QA.jsonl --votes votes.jsonl` reads them against "
        "the question set's metrics."
    )
