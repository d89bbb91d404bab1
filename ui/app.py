"""The ragtune page. For now it shows what the chat will answer from; the chat engine is next."""

import streamlit as st

from chatbot.config import Settings
from chatbot.errors import RagtuneError
from chatbot.store import Store

st.set_page_config(page_title="ragtune", page_icon=":speech_balloon:")
st.title("ragtune")
st.caption(
    "See what prompt engineering, retrieval (RAG) and a LoRA adapter each buy, "
    "alone or together, on your product's knowledge base."
)

try:
    settings = Settings.from_env()
    store = Store.open(settings)
    try:
        stats = store.stats()
    finally:
        store.close()  # local Qdrant allows one process per folder: do not hold it between reruns
except RagtuneError as error:
    st.error(str(error))
    st.stop()

st.subheader("Knowledge base")
if not stats["exists"]:
    st.warning(f"Collection '{stats['collection']}' is empty: run `rag-ingest data/kb` (or `make demo`) first.")
else:
    left, middle, right = st.columns(3)
    left.metric("Documents", len(stats["sources"]))
    middle.metric("Chunks", stats["chunks"])
    right.metric("Collection", stats["collection"])
    st.write(f"Embedded with {stats['embedding']}; last ingest {stats['updated']}.")
    with st.expander("Sources"):
        st.write("\n".join(f"- `{source}`" for source in stats["sources"]))

st.info(
    "The chat page is not built yet. The chat engine is ready on the command line: "
    '`rag-chat "your question"` (or `rag-chat` for a conversation). This page shows the knowledge base it answers from.'
)
