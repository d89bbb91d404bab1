"""What every page shares: the one cached engine, error messages, and how an answer is shown.

The engine (models + the open store) is built once per server process and shared by
every session: it holds no per-user state, and every toggle is a per-call argument,
so two browser sessions with different settings each get their own answers. A local
Qdrant folder is locked to one process, so the pages reach the store through this
engine and never open a second one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import closing
from itertools import pairwise
from typing import Any

import streamlit as st

from adapters.card import AdapterCard
from adapters.registry import AdapterInfo
from chatbot.build import build_engine
from chatbot.core.config import Settings
from chatbot.core.errors import RagtuneError
from chatbot.core.text import heading_path
from chatbot.engine import Answer, ChatEngine
from chatbot.options import AnswerOptions
from chatbot.rag.prompts import Strategy
from chatbot.rag.retrieval import RetrievalMode
from ui.safe_markdown import code_span, plain, safe_markdown

STRATEGY_LABELS = {strategy.value: strategy.label for strategy in Strategy}
MODES = [RetrievalMode.HYBRID.value, RetrievalMode.DENSE.value]
NO_DOCUMENTS = "No documents yet: ingest on the Knowledge base page or run `rag-ingest data/kb`."
INTERRUPTED = ":material/pause_circle: No answer: it was cut off (a setting changed or the page reloaded). Ask again."

log = logging.getLogger(__name__)


@st.cache_resource
def app_settings() -> Settings:
    """The `RAG_*` settings, read once per server process (pages never read the environment themselves)."""
    return Settings.from_env()


@st.cache_resource(show_spinner="Loading the models (first time only)...")
def load_engine() -> ChatEngine:
    """The engine for this server process; a failure is not cached, so fixing it and reloading the page works."""
    # require_collection=False: the Knowledge base page must work before anything is ingested.
    return build_engine(app_settings(), require_collection=False)


@st.cache_resource
def ingest_lock() -> threading.Lock:
    """One ingest at a time across all sessions (they share one store)."""
    return threading.Lock()


def engine_or_stop() -> ChatEngine:
    """The shared engine, or the error's message (and the page stops there)."""
    try:
        return load_engine()
    except RagtuneError as error:
        show_error(error)
        st.stop()


def show_error(error: RagtuneError | str) -> None:
    """A user-fixable problem as its message, never a traceback (a message may quote a file name or a line)."""
    st.error(safe_markdown(str(error)), icon=":material/error:")


def show_unexpected(error: Exception) -> None:
    """A bug or an outside failure: a short message on the page, the traceback in the server log only."""
    log.error("Unexpected error on a page", exc_info=error)
    st.error(f"Something went wrong: {type(error).__name__}. Details are in the server log.", icon=":material/error:")


def chat_history(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The finished exchanges of a chat, as strictly alternating user/assistant turns for the engine.

    A question whose answer was cut off (or never came) is left out: two user turns in a
    row are rejected by strict chat templates and servers.
    """
    turns: list[tuple[str, str]] = []
    for question, reply in pairwise(messages):
        if question["role"] == "user" and reply["role"] == "assistant" and not reply.get("interrupted"):
            turns += [("user", question["content"]), ("assistant", reply["content"])]
    return turns


def stream_answer(engine: ChatEngine, question: str, history: list[tuple[str, str]], options: AnswerOptions) -> Answer:
    """Stream one answer into the current container and return the final `Answer`.

    The stream is always closed before returning, even when the script is stopped or
    rerun mid-answer: the model holds a lock for the whole stream, and a stream left
    open would block the next one. Not `st.write_stream`: it renders the raw text, and
    the whole text so far must be made safe each time (an image can arrive in pieces).
    """
    final: list[Answer] = []
    shown, text = st.empty(), ""
    with closing(engine.stream(question, history, **options.kwargs())) as stream:
        for item in stream:
            if isinstance(item, Answer):
                final.append(item)
            elif item:
                text += item
                shown.markdown(safe_markdown(text))
    return final[0]


def render_details(answer: Answer, label: str | None, *, compact: bool = False) -> None:
    """Under an answer: its sources, the settings label and timings, notes, and (unless compact) the prompt."""
    if compact:
        render_source_list(answer)
    else:
        render_sources(answer)
    st.caption(" · ".join(part for part in (label, timing_text(answer.timings)) if part))
    if answer.abstained:
        st.caption(f":material/block: Abstained without generating: {plain(answer.abstain_reason)}.")
    if answer.citations_added:
        cited = " ".join(f"[{n}]" for n in answer.citations_added)
        st.caption(f":material/link: Citations {cited} added by the engine: the model cited nothing itself.")
    if answer.loop_cut:
        st.caption(":material/content_cut: Stopped where the model started repeating itself.")
    if answer.reasoning:
        with st.expander("Reasoning"):
            st.text(answer.reasoning)
    if not compact:
        with st.expander("Prompt"):
            st.code(answer.prompt, language=None, wrap_lines=True)


def render_sources(answer: Answer) -> None:
    """The passages the answer was given, numbered [n] as its citations are."""
    for number, hit in enumerate(answer.sources, 1):
        with st.expander(
            f"[{number}] {plain(heading_path(hit.title, hit.section))}  ·  {hit.score:.2f}",
            icon=":material/description:",
        ):
            st.caption(plain(hit.source if hit.page is None else f"{hit.source}, page {hit.page}"))
            st.text(hit.text)


def render_source_list(answer: Answer) -> None:
    """The sources as one expander of headings, for narrow columns."""
    if not answer.sources:
        return
    with st.expander(f"Sources ({len(answer.sources)})", icon=":material/description:"):
        for number, hit in enumerate(answer.sources, 1):
            st.markdown(f"**[{number}]** {plain(heading_path(hit.title, hit.section))} · {hit.score:.2f}")
            st.caption(plain(hit.source))


def timing_text(timings: dict[str, float]) -> str:
    """'4.2 s (first token 0.9 s)' from an answer's timings."""
    total = sum(seconds for name, seconds in timings.items() if name != "first_token")
    first = timings.get("first_token")
    if first is None:
        return f"{total:.1f} s"
    before = sum(timings.get(name, 0.0) for name in ("condense", "retrieve", "prompt"))
    return f"{total:.1f} s (first token {before + first:.1f} s)"


def loaded_adapters(engine: ChatEngine) -> dict[str, AdapterInfo]:
    """The adapters that can be switched to, by how a select box shows them."""
    return {adapter_choice(info): info for info in engine.adapters() if info.loaded}


def adapter_choice(info: AdapterInfo) -> str:
    """An adapter as a select box option: its name, marked when it is on the served model."""
    return f"{info.name} (served)" if info.served else info.name


def adapter_label(name: str) -> str:
    """How an adapter choice reads in a select box ("" is none: a None option would show as unselected)."""
    return name or "None (base model)"


def card_summary(card: AdapterCard) -> list[str]:
    """The few lines of an adapter's card (written by `rag-train-adapter`) a person wants to read.

    A card is a file anyone can edit: every value goes in as plain text, numbers only where they are numbers.
    """
    training, held_out = card.training, card.held_out
    lines = []
    if card.base_model:
        lines.append(f"Base model: {code_span(card.base_model)}")
    if card.served_by:
        lines.append(f"Served by {plain(card.served_by)}")
    if card.rank is not None:
        lines.append(f"LoRA rank {card.rank}, alpha {_shown(card.alpha)}")
    if "pairs" in training:
        steps = f" for {card.steps} steps" if card.steps is not None else ""
        lines.append(f"Trained on {_shown(training['pairs'])} pairs{steps}, final loss {_shown(card.final_loss)}")
    if "base_loss" in held_out and "adapter_loss" in held_out:
        lines.append(
            f"Held-out loss {_shown(held_out['base_loss'], 3)} → {_shown(held_out['adapter_loss'], 3)} "
            f"({_shown(held_out.get('pairs'))} pairs)"
        )
    if card.created:
        lines.append(f"Created {plain(card.created)}")
    return lines


def _shown(value: Any, decimals: int | None = None) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.{decimals}f}" if decimals is not None else f"{value:g}"
    return plain(str(value))


def run_guarded(action: Callable[[], Any]) -> Any:
    """Run `action`; a RagtuneError becomes its message on the page and None."""
    try:
        return action()
    except RagtuneError as error:
        show_error(error)
        return None
