"""The Streamlit pages, headless through AppTest, over a real engine with fake models.

The engine is a real `ChatEngine` over a real in-memory Qdrant, ingested by the real
pipeline with `FakeEmbeddings`, answering with a `FakeChatModel` that records every
call; the pages get it through `ui.common.build_engine`, which the tests replace.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fakes import FakeChatModel, FakeEmbeddings
from markdown_it import MarkdownIt
from qdrant_client import QdrantClient
from streamlit.runtime.scriptrunner_utils.exceptions import StopException
from streamlit.testing.v1 import AppTest

from adapters.card import AdapterCard
from adapters.registry import AdapterInfo
from chatbot.core.config import Settings
from chatbot.core.errors import StoreLockedError
from chatbot.engine import ChatEngine
from chatbot.rag.retrieval import Retriever
from chatbot.rag.store import Store
from ingest.pipeline import ingest_paths
from ui import common, uploads

UI = Path(__file__).resolve().parents[1] / "ui"
APP, COMPARE, KB, EVALUATE = (
    str(UI / name) for name in ("app.py", "views/compare.py", "views/knowledge_base.py", "views/evaluate.py")
)
PAGES = {
    "refunds.md": "# Refunds\n\nRefunds for unused labels take 5 business days to reach your postage wallet.\n",
    "plans.md": "# Plans\n\nThe Growth plan costs $49 per month and includes 1,000 labels.\n",
    "printing.md": "# Printing\n\nPrint labels on 4x6 thermal paper from Settings > Printing.\n",
}
QUESTION = "How long do refunds for unused labels take?"


class PageChatModel(FakeChatModel):
    """The fake chat model, plus the name and answer loss the adapter probe asks for."""

    model_name: str = "fake-135M"

    def answer_loss(self, messages, answer, *, adapter=None) -> float:
        return 2.0 if adapter is None else 1.5


def make_engine(store: Store, **model_options) -> ChatEngine:
    model = PageChatModel(adapters=("support",), **model_options)
    card = AdapterCard(
        base_model="fake-135M",
        rank=16,
        alpha=32,
        training={"pairs": 120, "data": "data/training/pairs.jsonl", "lr": 2e-4},
        steps=300,
        final_loss=0.91,
        held_out={"pairs": 12, "base_loss": 2.0, "adapter_loss": 1.5},
        probe=[{"messages": [], "answer": "..."}],
        extra={"loss_curve": [2.1, 1.4, 0.9]},
    )
    return ChatEngine(
        Retriever(store, FakeEmbeddings(), top_k=3),
        model,
        abstain_threshold=0.0,
        adapters=[AdapterInfo("support", card, "/adapters/support")],
    )


@pytest.fixture
def kb_dir(tmp_path, monkeypatch):
    kb = tmp_path / "kb"
    kb.mkdir()
    for name, text in PAGES.items():
        (kb / name).write_text(text)
    monkeypatch.setattr(uploads, "KB_DIR", kb)
    return kb


@pytest.fixture
def use_engine(monkeypatch):
    """Serve pages the given engine (or raise the given error) in place of `build_engine`."""

    def serve(engine_or_error):
        def build(settings, *, require_collection=True):
            if isinstance(engine_or_error, Exception):
                raise engine_or_error
            return engine_or_error

        monkeypatch.setattr(common, "build_engine", build)
        common.load_engine.clear()
        common.app_settings.clear()

    yield serve
    common.load_engine.clear()
    common.app_settings.clear()


@pytest.fixture
def store(kb_dir):
    store = Store(QdrantClient(location=":memory:"), "kb")
    ingest_paths([kb_dir], Settings(), store=store, embeddings=FakeEmbeddings())
    yield store
    store.close()


@pytest.fixture
def engine(store, use_engine):
    engine = make_engine(store)
    use_engine(engine)
    return engine


def label_of(message) -> str:
    """The caption under an answer that names its settings and timings."""
    return next(c.value for c in message.caption if c.value.startswith("retrieval "))


def ask(app: AppTest, question: str = QUESTION) -> AppTest:
    app.chat_input[0].set_value(question).run()
    assert not app.exception, app.exception
    return app


# Where a document, a file name or the model could put an image: the page must render none of them.
EVIL = "http://evil.example"
HOSTILE_PAGES = {
    "refunds.html": (
        f"<html><head><title>Refunds ![t]({EVIL}/title.png) <img src='{EVIL}/t2.png'></title></head>"
        "<body><p>Refunds for unused labels take 5 business days to reach your postage wallet.</p></body></html>"
    ),
    "labels.md": f"# Labels\n\n## Unused labels ![s]({EVIL}/section.png)\n\nUnused labels can be refunded.\n",
}
HOSTILE_REPLY = (
    f"Refunds take 5 days [1]. ![a]({EVIL}/answer.png) ![r][ref] <img src={EVIL}/html.png>\n\n"
    f"[ref]: {EVIL}/reference.png\n\n- **Growth** costs $49"
)


def rendered_markdown(app: AppTest) -> list[str]:
    """Every text on the page that Streamlit renders as Markdown."""
    kinds = ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader")
    return [e.value for kind in kinds for e in app.get(kind)] + [e.label for e in app.expander]


def images_shown(app: AppTest) -> list[str]:
    """The images and raw HTML a CommonMark renderer would make of the page's Markdown."""

    def walk(tokens):
        for token in tokens:
            if token.type in ("image", "html_inline", "html_block"):
                yield f"{token.type}: {token.content or token.attrGet('src')}"
            yield from walk(token.children or [])

    parser = MarkdownIt("commonmark")
    return [found for text in rendered_markdown(app) for found in walk(parser.parse(text))]


@pytest.fixture
def hostile_engine(tmp_path, use_engine):
    kb = tmp_path / "hostile"
    kb.mkdir()
    for name, text in HOSTILE_PAGES.items():
        (kb / name).write_text(text)
    store = Store(QdrantClient(location=":memory:"), "kb")
    ingest_paths([kb], Settings(), store=store, embeddings=FakeEmbeddings())
    engine = make_engine(store, replies=[HOSTILE_REPLY])
    use_engine(engine)
    yield engine
    store.close()


# -- Chat ----------------------------------------------------------------------------------


def test_an_answer_streams_with_its_numbered_sources_settings_and_prompt(engine):
    app = ask(AppTest.from_file(APP, default_timeout=30).run())

    user, assistant = app.chat_message
    assert user.markdown[0].value == QUESTION
    assert assistant.markdown[0].value == "Refunds take 5 days [1]."
    sources = [e.label for e in assistant.expander if e.label.startswith("[")]
    assert sources[0].startswith("[1] Refunds") and sources[1].startswith("[2] ")
    assert "retrieval on (hybrid, top 3) · base model · Zero-shot" in label_of(assistant)
    assert "first token" in label_of(assistant)
    prompt = next(e for e in assistant.expander if e.label == "Prompt")
    assert "[1] Refunds" in prompt.code[0].value


def test_the_sidebar_toggles_reach_the_engine_as_plain_arguments(engine):
    app = AppTest.from_file(APP, default_timeout=30).run()
    app.sidebar.toggle(key="use_retrieval").set_value(False)
    app.sidebar.selectbox(key="adapter").set_value("support")
    app.sidebar.selectbox(key="strategy").set_value("few-shot")
    ask(app.run())

    call = engine.chat_model.calls[-1]
    assert call["adapter"] == "support"
    assert "<context>" not in "".join(str(m.content) for m in call["messages"])
    assert "retrieval off · adapter support · Few-shot" in label_of(app.chat_message[1])
    assert not [e for e in app.chat_message[1].expander if e.label.startswith("[")]


def test_top_k_and_mode_reach_the_retriever(engine, monkeypatch):
    seen = {}
    original = engine.retriever.retrieve

    def spy(query, **options):
        seen.update(options)
        return original(query, **options)

    monkeypatch.setattr(engine.retriever, "retrieve", spy)
    app = AppTest.from_file(APP, default_timeout=30).run()
    app.sidebar.slider(key="top_k").set_value(2)
    app.sidebar.radio(key="mode").set_value("dense")
    ask(app.run())

    assert seen["k"] == 2 and seen["mode"] == "dense"
    assert len([e for e in app.chat_message[1].expander if e.label.startswith("[")]) == 2


def test_settings_changed_mid_conversation_apply_to_the_next_question_only(engine):
    app = ask(AppTest.from_file(APP, default_timeout=30).run())
    app.sidebar.toggle(key="use_retrieval").set_value(False)
    app.sidebar.selectbox(key="adapter").set_value("support")
    ask(app.run(), "And for the Growth plan?")

    first, second = app.chat_message[1], app.chat_message[3]
    assert "retrieval on" in label_of(first) and "base model" in label_of(first)
    assert "retrieval off" in label_of(second) and "adapter support" in label_of(second)
    assert [call["adapter"] for call in engine.chat_model.calls] == [None, "support"]
    history = engine.chat_model.calls[1]["messages"]
    assert [m.content for m in history[1:3]] == [QUESTION, "Refunds take 5 days [1]."]


def test_two_sessions_keep_their_own_toggles_and_answers(engine):
    one = AppTest.from_file(APP, default_timeout=30).run()
    two = AppTest.from_file(APP, default_timeout=30).run()
    two.sidebar.toggle(key="use_retrieval").set_value(False)
    ask(one)
    ask(two.run(), "What does Growth cost?")

    assert len(one.chat_message) == len(two.chat_message) == 2
    assert one.chat_message[0].markdown[0].value == QUESTION
    assert "retrieval on" in label_of(one.chat_message[1])
    assert "retrieval off" in label_of(two.chat_message[1])


def test_clear_chat_empties_the_history(engine):
    app = ask(AppTest.from_file(APP, default_timeout=30).run())
    app.sidebar.button[0].click().run()
    assert not app.chat_message


def test_engine_notes_show_under_the_answer(store, use_engine):
    engine = make_engine(store, replies=["Refunds for unused labels take 5 business days."])
    use_engine(engine)
    app = ask(AppTest.from_file(APP, default_timeout=30).run())
    assert any("added by the engine" in c.value for c in app.chat_message[1].caption)

    engine.abstain_threshold = 1.01  # nothing is similar enough: the engine answers "I don't know" itself
    ask(app, "Which colour is the logo?")
    assert app.chat_message[3].markdown[0].value.startswith("I don't know")
    assert any(c.value.startswith(":material/block: Abstained") for c in app.chat_message[3].caption)


def test_the_adapter_card_and_probe_show_in_the_sidebar(engine):
    app = AppTest.from_file(APP, default_timeout=30).run()
    card = app.sidebar.expander[0]
    assert card.label == "support"
    summary = card.markdown[0].value
    assert "- Trained on 120 pairs for 300 steps, final loss 0.91" in summary
    assert "- Held-out loss 2.000 → 1.500 (12 pairs)" in summary
    assert "probe" not in summary and "loss_curve" not in summary  # no raw dump of the card
    card.button[0].click().run()
    metric = app.sidebar.metric[0]
    assert (metric.value, metric.delta) == ("1.500", "-0.500 vs base 2.000")
    assert app.sidebar.success[0].value.startswith("Applied")


def test_an_error_during_an_answer_is_a_message(engine):
    engine.chat_model.adapters = ()  # the adapter went away: the model refuses it
    app = AppTest.from_file(APP, default_timeout=30).run()
    app.sidebar.selectbox(key="adapter").set_value("support")
    ask(app.run())
    assert "No adapter named 'support' is loaded" in app.chat_message[1].error[0].value
    app.run()
    assert not app.chat_message  # the unanswered question is not kept in the history


def test_an_empty_store_says_how_to_fill_it(use_engine):
    empty = Store(QdrantClient(location=":memory:"), "kb")
    use_engine(make_engine(empty))
    app = ask(AppTest.from_file(APP, default_timeout=30).run())

    assert "rag-ingest data/kb" in app.info[0].value
    assert "is empty or missing: run `rag-ingest data/kb` first" in app.error[0].value


@pytest.mark.parametrize("page", [APP, COMPARE, KB, EVALUATE])
def test_a_locked_store_is_a_message_on_every_page(use_engine, page):
    use_engine(StoreLockedError("The local Qdrant store .ragtune/qdrant is in use by another process."))
    app = AppTest.from_file(page, default_timeout=30).run()
    assert not app.exception
    assert app.error[0].value.startswith("The local Qdrant store .ragtune/qdrant is in use")


def test_a_bad_setting_is_shown_as_a_message_not_a_traceback(monkeypatch):
    common.load_engine.clear()
    common.app_settings.clear()
    monkeypatch.setenv("RAG_TOP_K", "-3")
    app = AppTest.from_file(APP, default_timeout=30).run()
    assert not app.exception
    assert app.error[0].value.startswith("RAG_TOP_K=-3 is not allowed")


def test_titles_and_answers_render_no_images_or_html(hostile_engine):
    app = ask(AppTest.from_file(APP, default_timeout=30).run())
    assert images_shown(app) == []
    assistant = app.chat_message[1]
    assert any("] Refunds \\!\\[t\\]" in e.label for e in assistant.expander)  # the page's <title>, as text
    assert "**Growth** costs" in assistant.markdown[0].value  # ordinary Markdown still renders
    hostile_engine.abstain_threshold = 1.01  # the engine's own "I don't know" names the closest titles
    ask(app, "Which colour is the logo?")
    assert "title.png" in app.chat_message[3].markdown[0].value  # as text: nothing renders it as an image
    app.run()  # the history, redrawn
    assert images_shown(app) == []


def test_an_unexpected_error_is_a_short_message_and_a_log_entry(engine, monkeypatch, caplog):
    def broken():
        raise RuntimeError("secret detail from /srv/ragtune/internal.py")

    monkeypatch.setattr(engine.store, "count", broken)
    with caplog.at_level(logging.ERROR):
        app = AppTest.from_file(APP, default_timeout=30).run()
    assert not app.exception
    assert [e.value for e in app.error] == ["Something went wrong: RuntimeError. Details are in the server log."]
    assert not any("secret" in text for text in rendered_markdown(app))
    logged = [r for r in caplog.records if r.exc_info and "secret detail" in str(r.exc_info[1])]
    assert logged, caplog.records


def test_an_answer_cut_off_by_a_rerun_leaves_the_history_alternating(engine, monkeypatch):
    # Changing a sidebar setting mid-answer reruns the script: Streamlit stops it at its next
    # call with a StopException-like control exception, here raised from within the stream.
    whole = engine.stream

    def cut_off(question, history=(), **options):
        stream = whole(question, history, **options)
        try:
            yield next(stream)
            raise StopException()
        finally:
            stream.close()

    monkeypatch.setattr(engine, "stream", cut_off)
    app = AppTest.from_file(APP, default_timeout=30).run()
    app.chat_input[0].set_value(QUESTION).run()
    monkeypatch.setattr(engine, "stream", whole)
    app.run()
    assert [m.name for m in app.chat_message] == ["user", "assistant"]
    assert "cut off" in app.chat_message[1].caption[0].value

    ask(app, "And for the Growth plan?")
    ask(app, "And for the Pro plan?")
    sent = [m.type for m in engine.chat_model.calls[-1]["messages"]]
    assert sent[0] == "system" and sent[-1] == "human"
    turns = sent[1:]
    assert turns == ["human", "ai"] * (len(turns) // 2) + ["human"], sent  # never two user turns in a row
    assert len(turns) == 3  # the cut-off question is left out, the finished exchange kept


def test_a_dangling_question_from_before_does_not_reach_the_model(engine):
    app = AppTest.from_file(APP, default_timeout=30)
    app.session_state["messages"] = [{"role": "user", "content": "cut off"}]
    ask(app.run())
    sent = [m.type for m in engine.chat_model.calls[-1]["messages"]]
    assert sent == ["system", "human"]


# -- Compare -------------------------------------------------------------------------------


def compare(app: AppTest, question: str = QUESTION) -> AppTest:
    app.text_input[0].set_value(question)
    app.button[0].click().run()  # the form's submit button
    assert not app.exception, app.exception
    return app


def test_compare_fills_four_cells_one_stream_at_a_time(engine):
    engine.chat_model.replies = [
        "Five days.",
        "Refunds take 5 days [1].",
        "Five days.",
        "Refunds take 5 business days [1].",
    ]
    app = compare(AppTest.from_file(COMPARE, default_timeout=30).run())

    calls = engine.chat_model.calls
    assert [call["adapter"] for call in calls] == [None, None, "support", "support"]
    with_context = ["<context>" in str(call["messages"][-1].content) for call in calls]
    assert with_context == [False, True, False, True]
    titles = [m.value for m in app.markdown if m.value.startswith("##### ")]
    assert titles == [
        "##### Retrieval off · base model",
        "##### Retrieval on · base model",
        "##### Retrieval off · adapter support",
        "##### Retrieval on · adapter support",
    ]
    sources = [e for e in app.expander if e.label.startswith("Sources")]
    assert [e.label for e in sources] == ["Sources (3)", "Sources (3)"]  # the cells with retrieval on
    assert sources[0].markdown[0].value.startswith("**[1]** Refunds")
    diffs = [e for e in app.expander if e.label.startswith("Diff vs. first cell")]
    assert [e.label for e in diffs] == ["Diff vs. first cell (0% same words)"] * 2
    assert diffs[1].code[0].value == "- Five days.\n+ Refunds take 5 business days [1]."
    assert "Same words as the first cell." in [c.value for c in app.caption]
    assert [b.label for b in app.get("download_button")] == ["Download Markdown", "Download JSON"]


def test_compare_every_strategy_and_a_rerun_redraws_without_asking_again(engine):
    app = AppTest.from_file(COMPARE, default_timeout=30).run()
    app.checkbox[0].check()
    compare(app)
    assert len(engine.chat_model.calls) == 12
    assert [h.value for h in app.subheader] == ["Zero-shot", "Few-shot", "Chain of thought"]

    app.run()
    assert len(engine.chat_model.calls) == 12


def test_compare_without_an_adapter_keeps_the_grid_and_says_why(store, use_engine):
    engine = make_engine(store)
    engine._adapters = []
    use_engine(engine)
    app = compare(AppTest.from_file(COMPARE, default_timeout=30).run())
    assert len(engine.chat_model.calls) == 2
    assert [i.value for i in app.info] == ["No adapter is loaded: train one with `rag-train-adapter`."] * 2
    titles = [m.value for m in app.markdown if m.value.startswith("##### ")]
    assert titles[2:] == ["##### Retrieval off · adapter", "##### Retrieval on · adapter"]


def test_compare_renders_no_images_from_titles_answers_or_the_question(hostile_engine):
    app = compare(
        AppTest.from_file(COMPARE, default_timeout=30).run(), f"Refunds for unused labels? ![q]({EVIL}/q.png)"
    )
    assert len(hostile_engine.chat_model.calls) == 4
    assert images_shown(app) == []
    app.run()  # the cells, redrawn from the session
    assert images_shown(app) == []


# -- Knowledge base ------------------------------------------------------------------------


def test_the_knowledge_base_page_shows_what_is_stored(engine, kb_dir):
    app = AppTest.from_file(KB, default_timeout=30).run()
    assert not app.exception
    assert app.selectbox[0].options == [str(kb_dir.resolve())]  # the folder it was built from (= data/kb here)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Documents"] == "3" and metrics["Chunks"] == "3"
    assert "all-MiniLM-L6-v2" in app.caption[0].value


def test_the_folder_select_offers_folders_ingested_as_folders_only(engine, kb_dir, tmp_path):
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "notes.md").write_text("# Notes\n\nA loose page kept at home.\n")
    (home / "docs" / "guide.md").write_text("# Guide\n\nA page in a folder.\n")
    for path in (home / "notes.md", home / "docs"):
        ingest_paths([path], Settings(), store=engine.store, embeddings=FakeEmbeddings())

    app = AppTest.from_file(KB, default_timeout=30).run()

    assert not app.exception
    assert app.selectbox[0].options == [str(kb_dir.resolve()), str((home / "docs").resolve())]
    table = app.dataframe[0].value
    assert sorted(table["source"]) == ["guide.md", "notes.md", *sorted(PAGES)]
    assert table["chunks"].tolist() == [1] * 5
    assert table["folder"].tolist()[:2] == [str((home / "docs").resolve()), str(home.resolve())]


def test_uploads_are_checked_on_the_server(engine, kb_dir):
    app = AppTest.from_file(KB, default_timeout=30).run()
    app.file_uploader[0].set_value(
        [
            ("returns.md", b"# Returns\n\nPrint a return label from the Returns tab.\n", "text/markdown"),
            ("big.md", b"x" * (uploads.MAX_UPLOAD_BYTES + 1), "text/markdown"),
            ("tool.exe", b"MZ", "application/octet-stream"),
            ("../../escape.md", b"# Out\n", "text/markdown"),
        ]
    )
    app.button[0].click().run()

    assert not app.exception
    assert [s.value for s in app.success] == ["Saved `uploads/returns.md`."]
    errors = [e.value for e in app.error]
    assert "over the 10 MB limit" in errors[0]
    assert "which is not accepted" in errors[1]
    assert "is not a plain file name" in errors[2]
    assert sorted(p.name for p in (kb_dir / "uploads").iterdir()) == ["returns.md"]
    assert not (kb_dir.parent / "escape.md").exists()


def test_upload_names_stay_distinct_and_a_long_one_is_saved(engine, kb_dir):
    long = "a" * 247 + ".md"
    app = AppTest.from_file(KB, default_timeout=30).run()
    app.file_uploader[0].set_value(
        [
            ("日本語.md", b"# JA\n", "text/markdown"),
            ("中文.md", b"# ZH\n", "text/markdown"),
            (long, b"# L\n", "text/markdown"),
        ]
    )
    app.button[0].click().run()

    assert not app.exception, app.exception
    saved = sorted(p.name for p in (kb_dir / "uploads").iterdir())
    assert saved == ["a" * (uploads.MAX_NAME_BYTES - 3) + ".md", "中文.md", "日本語.md"]
    assert (kb_dir / "uploads" / "日本語.md").read_bytes() == b"# JA\n"
    messages = [s.value for s in app.success]
    assert messages[:2] == ["Saved `uploads/日本語.md`.", "Saved `uploads/中文.md`."]
    assert f"(uploaded as `{long}`: names keep letters" in messages[2]

    app.file_uploader[0].set_value([("中文.md", b"# ZH v2\n", "text/markdown")])
    app.button[0].click().run()
    assert app.success[0].value == "Saved `uploads/中文.md`, replacing the file of that name."


def test_the_knowledge_base_page_renders_no_images_from_file_names(engine, kb_dir):
    hostile = "x`![i](http:evil.example)`"
    (kb_dir / f"{hostile}.md").write_text("# Hostile\n\nA page with a crafted name.\n")
    (kb_dir / f"{hostile}.pdf").write_bytes(b"not a pdf")
    app = AppTest.from_file(KB, default_timeout=30).run()
    app.file_uploader[0].set_value([("![i](http:evil.example).exe", b"MZ", "application/octet-stream")])
    app.button[0].click().run()
    next(b for b in app.button if b.label == "Check for changes").click().run()

    assert not app.exception, app.exception
    assert any("evil.example" in e.value for e in app.error)  # the refused upload and the broken pdf, named
    assert any(hostile in m.value for m in app.markdown)  # the added file, listed
    assert images_shown(app) == []


def test_reingest_shows_the_plan_then_ingests_through_the_engines_store(engine, kb_dir):
    (kb_dir / "returns.md").write_text("# Returns\n\nPrint a return label from the Returns tab.\n")
    (kb_dir / "plans.md").unlink()
    (kb_dir / "broken.pdf").write_bytes(b"not a pdf")
    app = AppTest.from_file(KB, default_timeout=30).run()
    next(b for b in app.button if b.label == "Check for changes").click().run()

    plan = {m.label: m.value for m in app.metric}
    assert (plan["Added"], plan["Removed"], plan["Unchanged"]) == ("1", "1", "2")
    assert any("broken.pdf" in e.value for e in app.error)
    assert engine.store.count() == 3  # a dry run writes nothing

    next(b for b in app.button if b.label == "Re-ingest").click().run()
    assert not app.exception
    assert "1 chunk embedded" in app.success[0].value
    assert sorted(engine.store.stats()["sources"]) == ["printing.md", "refunds.md", "returns.md"]
    assert {m.label: m.value for m in app.metric}["Documents"] == "3"
    assert engine.answer("return label Returns tab").sources[0].source == "returns.md"


# -- Evaluate ------------------------------------------------------------------------------


def test_evaluate_runs_the_grid_and_offers_the_report(engine, monkeypatch, tmp_path):
    questions = tmp_path / "qa.jsonl"
    questions.write_text(
        '{"id": "r1", "question": "How long do refunds take?", "answer": "5 business days", '
        '"must_include": ["5 days"], "source": "refunds.md", "kind": "fact"}\n'
    )
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    app = AppTest.from_file(EVALUATE, default_timeout=60).run()
    app.file_uploader[0].set_value(("qa.jsonl", questions.read_bytes(), "application/json"))
    next(b for b in app.button if b.label == "Run").click().run()

    assert not app.exception, app.exception
    assert len(engine.chat_model.calls) == 4
    table = app.dataframe[0].value
    assert list(table["configuration"]) == [
        "retrieval off · base model · Zero-shot",
        "retrieval on · base model · Zero-shot",
        "retrieval off · adapter support · Zero-shot",
        "retrieval on · adapter support · Zero-shot",
    ]
    assert list(table["recall"]) == ["1.00"] * 4
    assert list(table["hit@1"]) == ["", "1.00", "", "1.00"]  # blank, not "None", where it does not apply
    assert [b.label for b in app.get("download_button")] == ["Report (Markdown)", "Report (JSON)", "Chart (PNG)"]


def test_a_bad_question_set_names_its_line(engine):
    app = AppTest.from_file(EVALUATE, default_timeout=30).run()
    app.file_uploader[0].set_value(("bad.jsonl", b'{"id": "a", "question": "q"}\nnot json\n', "application/json"))
    next(b for b in app.button if b.label == "Run").click().run()
    assert not app.exception
    assert "line 1" in app.error[0].value and "bad.jsonl" in app.error[0].value
    assert not engine.chat_model.calls


def test_the_evaluate_page_renders_no_images_from_an_upload_name(engine):
    app = AppTest.from_file(EVALUATE, default_timeout=30).run()
    app.file_uploader[0].set_value((f"![i]({EVIL}/set.png).txt", b"{}", "text/plain"))
    next(b for b in app.button if b.label == "Run").click().run()
    assert not app.exception
    assert "evil.example" in app.error[0].value
    assert images_shown(app) == []
