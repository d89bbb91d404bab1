"""The ragtune app: `streamlit run ui/app.py`. This file is the entry and the Chat page.

The chat history and the sidebar's toggles live in `st.session_state`, per browser
session; each stored answer keeps the label of the settings that produced it, so a
toggle changed mid-conversation applies to the next question only. Changing a toggle
while an answer streams reruns the script and cuts the answer off: the question's reply
stays marked interrupted, and only finished exchanges are sent back to the model.
"""

from __future__ import annotations

import streamlit as st

from chatbot.core.errors import RagtuneError
from chatbot.options import AnswerOptions
from ui.common import (
    INTERRUPTED,
    MODES,
    NO_DOCUMENTS,
    STRATEGY_LABELS,
    adapter_choice,
    adapter_label,
    card_summary,
    chat_history,
    engine_or_stop,
    render_details,
    run_guarded,
    show_error,
    show_unexpected,
    stream_answer,
)
from ui.safe_markdown import plain, safe_markdown

SETTING_KEYS = ("use_retrieval", "adapter", "strategy", "top_k", "mode", "arena_chosen", "arena_question", "arena_set")


def chat() -> None:
    """The Chat page."""
    st.title("Chat")
    engine = engine_or_stop()
    options = sidebar(engine)
    if engine.store.count() == 0:
        st.info(NO_DOCUMENTS, icon=":material/info:")

    messages = st.session_state.setdefault("messages", [])
    if not messages:
        st.caption(
            "Ask about the product. Flip retrieval, the adapter or the prompt strategy in the sidebar and ask again."
        )
    for message in messages:
        with st.chat_message(message["role"]):
            if message.get("interrupted"):
                st.caption(INTERRUPTED)
                continue
            st.markdown(safe_markdown(message["content"]))
            if message["role"] == "assistant":
                render_details(message["answer"], message["label"])

    question = st.chat_input("Ask a question about the product")
    if not question:
        return
    history = chat_history(messages)
    with st.chat_message("user"):
        st.markdown(safe_markdown(question))
    # Both turns go in before streaming, the reply marked interrupted until it completes: a rerun
    # mid-stream (any click) ends this script run at once, and the history must still alternate.
    reply = {"role": "assistant", "content": "", "interrupted": True}
    messages += [{"role": "user", "content": question}, reply]
    with st.chat_message("assistant"):
        try:
            answer = stream_answer(engine, question, history, options)
        except RagtuneError as error:
            del messages[-2:]  # the question was not answered: let it be asked again
            show_error(error)
            return
        render_details(answer, options.label)
    reply.update(content=answer.text, answer=answer, label=options.label, interrupted=False)


def sidebar(engine) -> AnswerOptions:
    """The levers, read as plain values for the next question."""
    adapters = engine.adapters()
    top_k = engine.retriever.top_k  # RAG_TOP_K
    defaults = {"use_retrieval": True, "adapter": "", "strategy": "zero-shot", "top_k": top_k, "mode": MODES[0]}
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)
    choices = {adapter_choice(info): info for info in adapters}
    if st.session_state.adapter not in choices:
        st.session_state.adapter = ""  # the adapter is gone (the server restarted without it)
    with st.sidebar:
        st.header("Settings")
        use_retrieval = st.toggle("Use retrieval", key="use_retrieval", help="Answer from the knowledge base")
        adapter = st.selectbox("Adapter", ["", *choices], format_func=adapter_label, key="adapter")
        strategy = st.selectbox(
            "Prompt strategy", list(STRATEGY_LABELS), format_func=STRATEGY_LABELS.__getitem__, key="strategy"
        )
        top_k = st.slider("Passages (top-k)", 1, max(10, top_k), key="top_k", disabled=not use_retrieval)
        mode = st.radio(
            "Retrieval mode",
            MODES,
            key="mode",
            horizontal=True,
            disabled=not use_retrieval,
            help="hybrid adds keywords",
        )
        if st.button("Clear chat", icon=":material/delete:", width="stretch"):
            st.session_state.messages = []
        if adapters:
            st.subheader("Adapters")
            for info in adapters:
                adapter_card(engine, info)
    chosen = choices.get(adapter)
    return AnswerOptions(
        use_retrieval, chosen and chosen.name, strategy, top_k, mode, served=bool(chosen and chosen.served)
    )


def adapter_card(engine, info) -> None:
    """An adapter's card, and a check that switching to it changes the model."""
    with st.expander(plain(adapter_choice(info)), icon=":material/tune:" if info.loaded else ":material/warning:"):
        if info.problem:
            st.warning(safe_markdown(info.problem))
        st.markdown("\n".join(f"- {line}" for line in card_summary(info.card)))
        if info.path:
            st.caption(plain(str(info.path)))
        if st.button("Is it applied?", key=f"probe-{adapter_choice(info)}", disabled=not info.loaded):
            result = run_guarded(lambda: engine.probe(info.name, served=info.served))
            if result is not None:
                base, tuned = result["base_loss"], result["adapter_loss"]
                st.metric(
                    "Answer loss",
                    f"{tuned:.3f}",
                    f"{tuned - base:+.3f} vs base {base:.3f}",
                    delta_color="inverse",  # lower loss is better
                    help=f"Mean loss of the reference answers of {result['pairs']} held-out pairs",
                )
                if result["applied"]:
                    st.success("Applied: the adapter changes the model's output.", icon=":material/check:")
                else:
                    st.warning("Not applied: the loss is the same as the base model's.")


def keep_settings() -> None:
    # Streamlit forgets a widget's value while its page is not shown; re-setting the keys
    # on every run keeps the chat toggles when the user visits another page and comes back.
    for key in SETTING_KEYS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


st.set_page_config(page_title="ragtune", page_icon=":material/forum:")
keep_settings()
navigation = st.navigation(
    [
        st.Page(chat, title="Chat", icon=":material/forum:", default=True),
        st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
        st.Page("views/arena.py", title="Arena", icon=":material/how_to_vote:"),
        st.Page("views/knowledge_base.py", title="Knowledge base", icon=":material/library_books:"),
        st.Page("views/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    ]
)
try:
    navigation.run()
except Exception as error:  # st.stop and reruns are BaseExceptions: they pass through
    show_unexpected(error)
