"""The pages' plain helpers: upload checks, safe Markdown, the chat history, the compare grid, its diffs and exports."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml

from chatbot.engine import Answer
from chatbot.options import AnswerOptions
from chatbot.rag.retrieval import Hit
from ui.common import chat_history, timing_text
from ui.comparison import base_of, grid, similarity, to_json, to_markdown, word_diff
from ui.safe_markdown import code_span, plain, safe_markdown
from ui.uploads import MAX_NAME_BYTES, MAX_UPLOAD_BYTES, MAX_UPLOAD_MB, UploadError, clean_name, save_upload

ROOT = Path(__file__).resolve().parents[1]
EVIL = "http://evil.example"


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("Refund policy (v2).md", "Refund-policy-v2.md"),
        ("notes.TXT", "notes.txt"),
        ("données.pdf", "données.pdf"),
        ("donne\u0301es.pdf", "données.pdf"),  # decomposed é: one spelling, so a re-upload replaces it
        ("日本語.md", "日本語.md"),
        ("中文.md", "中文.md"),
        ("हिन्दी.md", "हिन्दी.md"),  # combining vowel signs are kept
        ("invoice\u202egpj.md", "invoice-gpj.md"),  # a right-to-left override would disguise the name
        ("tab\there\n.md", "tab-here.md"),
    ],
)
def test_upload_names_are_made_plain(name, stored):
    assert clean_name(name) == stored


def test_a_long_upload_name_is_shortened_keeping_its_type():
    assert clean_name("a" * 247 + ".md") == "a" * (MAX_NAME_BYTES - 3) + ".md"
    shortened = clean_name("語" * 100 + ".md")  # 3 bytes a character: cut on a character boundary
    assert shortened == "語" * ((MAX_NAME_BYTES - 3) // 3) + ".md"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../../etc/passwd.md", "not a plain file name"),
        ("..\\boot.ini.txt", "not a plain file name"),
        ("/abs/path.md", "not a plain file name"),
        ("..", "not a plain file name"),
        (".env.md", "hidden file name"),
        ("tool.exe", "not accepted"),
        ("README", "not accepted"),
        ("nul\0.md", "not a plain file name"),
    ],
)
def test_unsafe_upload_names_are_refused(name, why):
    with pytest.raises(UploadError, match=why):
        clean_name(name)


def test_an_upload_lands_inside_the_uploads_folder_only(tmp_path):
    saved = save_upload("faq.md", b"# FAQ\n", tmp_path / "kb")
    assert saved.path == (tmp_path / "kb" / "uploads" / "faq.md").resolve()
    assert saved.path.read_bytes() == b"# FAQ\n"
    assert (saved.renamed, saved.replaced) == (False, False)
    assert [p.name for p in saved.path.parent.iterdir()] == ["faq.md"]  # no partial file left behind


def test_names_in_other_scripts_stay_distinct_and_a_long_one_is_saved(tmp_path):
    kb = tmp_path / "kb"
    first, second = save_upload("日本語.md", b"ja", kb), save_upload("中文.md", b"zh", kb)
    assert (first.path.read_bytes(), second.path.read_bytes()) == (b"ja", b"zh")
    long = save_upload("a" * 247 + ".md", b"long", kb)  # 251 characters: over the file system's 255 with ".part"
    assert long.renamed and long.path.read_bytes() == b"long"


def test_a_reupload_replaces_the_file_and_says_so(tmp_path):
    save_upload("faq.md", b"v1", tmp_path)
    again = save_upload("faq.md", b"v2", tmp_path)
    assert again.replaced and again.path.read_bytes() == b"v2"


def test_an_upload_leaves_another_sessions_partial_file_alone(tmp_path):
    # Another session is writing faq.md right now: its temporary file must not be reused.
    folder = tmp_path / "uploads"
    folder.mkdir()
    for name in (".faq.md.part", ".upload.part", ".faq.md.tmp"):
        (folder / name).write_bytes(b"the other session's bytes")
    saved = save_upload("faq.md", b"mine", tmp_path)
    assert saved.path.read_bytes() == b"mine"
    assert sorted(p.name for p in folder.iterdir()) == [".faq.md.part", ".faq.md.tmp", ".upload.part", "faq.md"]
    assert (folder / ".faq.md.part").read_bytes() == b"the other session's bytes"


def test_an_oversized_upload_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UploadError, match="over the 10 MB limit"):
        save_upload("big.md", b"x" * (MAX_UPLOAD_BYTES + 1), tmp_path)
    assert not (tmp_path / "uploads").exists()


def test_an_upload_through_a_planted_link_is_refused(tmp_path):
    (tmp_path / "kb" / "uploads").mkdir(parents=True)
    (tmp_path / "kb" / "uploads" / "faq.md").symlink_to(tmp_path / "outside.md")
    with pytest.raises(UploadError, match="outside"):
        save_upload("faq.md", b"# FAQ\n", tmp_path / "kb")
    assert not (tmp_path / "outside.md").exists()


def answer(text: str, *, sources: int = 0) -> Answer:
    hits = [Hit(f"p{n}.md", f"Page {n}", "Intro", 0.5, f"c{n}", "text", 0.5) for n in range(1, sources + 1)]
    timings = {"condense": 0.0, "retrieve": 0.1, "prompt": 0.1, "first_token": 0.3, "generate": 1.8}
    return Answer(text, hits, "prompt", "zero-shot", bool(sources), None, "q", timings)


def test_the_grid_is_retrieval_off_on_by_adapter_off_on_per_strategy():
    cells = grid(["zero-shot", "cot"], "support")
    assert [(c.options.strategy, c.options.adapter, c.options.use_retrieval) for c in cells[:4]] == [
        ("zero-shot", None, False),
        ("zero-shot", None, True),
        ("zero-shot", "support", False),
        ("zero-shot", "support", True),
    ]
    assert len(cells) == 8 and base_of(cells, cells[7]) is cells[4]
    assert [c.skipped for c in grid(["zero-shot"], None)][2:] == [
        "No adapter is loaded: train one with `rag-train-adapter`."
    ] * 2


def test_a_word_diff_shows_what_each_side_has_alone():
    base, other = "Refunds take five days.", "Refunds take 5 business days [1]."
    assert word_diff(base, other) == "- five days.\n+ 5 business days [1]."
    assert word_diff(base, base) == "" and similarity(base, base) == 1.0
    assert 0 < similarity(base, other) < 1


def test_the_exports_carry_every_cell():
    cells = grid(["zero-shot"], "support")
    cells[0].answer, cells[1].answer = answer("Five days."), answer("5 days [1].", sources=1)
    cells[2].error = "No adapter named 'support' is loaded."

    markdown = to_markdown("How long?", cells)
    assert "**Question:** How long?" in markdown
    assert "## Retrieval on · base model · Zero-shot" in markdown
    assert "- [1] Page 1 > Intro (`p1.md`, score 0.50)" in markdown
    assert "_No adapter named 'support' is loaded._" in markdown

    shown = json.loads(to_json("How long?", cells))
    assert [c["options"]["use_retrieval"] for c in shown["cells"]] == [False, True, False, True]
    assert shown["cells"][1]["answer"]["sources"][0]["source"] == "p1.md"
    assert shown["cells"][3]["answer"] is None and shown["cells"][3]["skipped"] is None


def test_labels_and_timings_read_as_the_page_shows_them():
    assert (
        AnswerOptions(True, None, "cot", 4, "hybrid").label
        == "retrieval on (hybrid, top 4) · base model · Chain of thought"
    )
    assert AnswerOptions(False, "support", "few-shot").label == "retrieval off · adapter support · Few-shot"
    assert timing_text(answer("x").timings) == "2.0 s (first token 0.5 s)"
    assert timing_text({"retrieve": 0.2}) == "0.2 s"


# -- Markdown from documents and the model ---------------------------------------------------


def unsafe_tokens(markdown: str) -> list[str]:
    """The images and raw HTML a CommonMark renderer would make of `markdown`."""

    def walk(tokens):
        for token in tokens:
            if token.type in ("image", "html_inline", "html_block"):
                yield f"{token.type}: {token.content or token.attrGet('src')}"
            yield from walk(token.children or [])

    return list(walk(MarkdownIt("commonmark").enable("table").parse(markdown)))  # GFM tables, as Streamlit


HOSTILE = [
    f"![x]({EVIL}/a.png)",
    f"Five days ![y][ref] and ![ref]\n\n[ref]: {EVIL}/r.png",
    f"[![badge]({EVIL}/b.png)]({EVIL})",
    f"<img src={EVIL}/i.png> and <{EVIL}/auto.png>",
    f"<div>\n<img src='{EVIL}/block.png'>\n</div>",
    f"\\\\![x]({EVIL}/after-escaped-backslash.png)",
    f"unclosed `tick ![x]({EVIL}/u.png)",
    f"```\ncode\n```\n![x]({EVIL}/after-fence.png)",
    f"`a\n\n![x]({EVIL}/across-a-blank-line.png)\n\n`",
    f"- `a\n- ![x]({EVIL}/across-list-items.png) `",
    f"| h | h |\n|---|---|\n| `a | ![x]({EVIL}/across-cells.png) ` |",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_images_and_html_in_an_answer_are_not_rendered(text):
    assert unsafe_tokens(text), "the example must be unsafe before"
    assert unsafe_tokens(safe_markdown(text)) == []


@pytest.mark.parametrize("text", [*HOSTILE, "Fees &amp; *labels* &#33;[x](u) :red[x] $5 # 1."])
def test_a_title_is_shown_as_exactly_its_text(text):
    assert MarkdownIt("commonmark").renderInline(plain(text)) == escapeHtml(" ".join(text.split()))


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        ("- **Five** days\n- `code` [1]", "- **Five** days\n- `code` [1]"),  # ordinary Markdown is kept
        ("See [the policy](https://example.com/refunds).", "See [the policy](https://example.com/refunds)."),
        ("Growth is $49, Pro $99.", "Growth is \\$49, Pro \\$99."),  # a price, not LaTeX
        ("![x](u) `![in](code)`", "!\\[x](u) `![in](code)`"),
        ("```html\n<img src=x>\n```", "```html\n<img src=x>\n```"),  # code shows literally already
        ("\\$5 and \\![x](u)", "\\$5 and \\![x](u)"),  # already escaped: left alone
    ],
)
def test_safe_markdown_keeps_everything_but_images_html_and_dollars(answer, shown):
    assert safe_markdown(answer) == shown


def test_plain_and_code_span_worked_examples():
    assert plain("Guide ![x](u) $5\n# Intro") == "Guide \\!\\[x\\]\\(u\\) \\$5 \\# Intro"
    assert MarkdownIt("commonmark").renderInline(plain("1. *Intro* <b>")) == "1. *Intro* &lt;b&gt;"
    assert code_span("a`b.md") == "``a`b.md``"
    assert code_span("`x") == "`` `x ``"
    assert MarkdownIt("commonmark").renderInline(code_span(f"a`![x]({EVIL})`.md")) == f"<code>a`![x]({EVIL})`.md</code>"


# -- Chat history ------------------------------------------------------------------------------


def test_the_history_sent_to_the_model_alternates_whatever_happened():
    messages = [
        {"role": "user", "content": "cut off by a rerun in an older session"},
        {"role": "user", "content": "How long?"},
        {"role": "assistant", "content": "Five days."},
        {"role": "user", "content": "And labels?"},
        {"role": "assistant", "content": "", "interrupted": True},
        {"role": "user", "content": "What does Growth cost?"},
        {"role": "assistant", "content": "$49."},
        {"role": "user", "content": "never answered"},
    ]
    assert chat_history(messages) == [
        ("user", "How long?"),
        ("assistant", "Five days."),
        ("user", "What does Growth cost?"),
        ("assistant", "$49."),
    ]
    assert chat_history([]) == []


# -- Server configuration ------------------------------------------------------------------------


def test_the_server_shows_no_tracebacks_and_takes_no_upload_over_the_limit():
    from streamlit.config import ShowErrorDetailsConfigOptions

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == ShowErrorDetailsConfigOptions.NONE.value
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MB  # Streamlit's own default is 200 MB
