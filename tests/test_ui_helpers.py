"""The pages' plain helpers: upload checks, the compare grid, its diffs and exports."""

from __future__ import annotations

import json

import pytest

from chatbot.engine import Answer
from chatbot.rag.retrieval import Hit
from ui.common import Options, timing_text
from ui.comparison import base_of, grid, similarity, to_json, to_markdown, word_diff
from ui.uploads import MAX_UPLOAD_BYTES, UploadError, clean_name, save_upload


@pytest.mark.parametrize(
    ("name", "stored"),
    [("Refund policy (v2).md", "Refund-policy-v2.md"), ("notes.TXT", "notes.txt"), ("données.pdf", "donn-es.pdf")],
)
def test_upload_names_are_made_plain(name, stored):
    assert clean_name(name) == stored


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
    path = save_upload("faq.md", b"# FAQ\n", tmp_path / "kb")
    assert path == (tmp_path / "kb" / "uploads" / "faq.md").resolve()
    assert path.read_bytes() == b"# FAQ\n"
    assert [p.name for p in path.parent.iterdir()] == ["faq.md"]  # no partial file left behind


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
        Options(True, None, "cot", 4, "hybrid").label()
        == "retrieval on (hybrid, top 4) · base model · Chain of thought"
    )
    assert Options(False, "support", "few-shot").label() == "retrieval off · adapter support · Few-shot"
    assert timing_text(answer("x").timings) == "2.0 s (first token 0.5 s)"
    assert timing_text({"retrieve": 0.2}) == "0.2 s"
