"""Hostile and unlucky input: one bad file fails alone, quickly, with a reason, and never sinks the run."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from test_loaders import fail, load, make_docx

from chatbot.errors import LoadError
from ingest import loaders
from ingest.clean import clean_mdx
from ingest.loaders import load_file

SIZE = 1_000_000  # characters: the old patterns took from minutes to days on each of these

# Each repeated to SIZE: unclosed tags, comments and elements, and long lines of what a pattern looks for.
ADVERSARIAL = {
    "unclosed tags": "<a b ",
    "unclosed tags with values": '<a b="x" ',
    "unclosed quoted values": '<a x="<a y=" w w ',
    "unclosed html comments": "<!-- ",
    "unclosed mdx comments": "{/* ",
    "unclosed script elements": "<script> ",
    "unclosed tables": "<table> ",
    "unclosed code elements": "<code> ",
    "unended code tags": "<code ",
    "unclosed headings": "<h1> ",
    "unended heading tags": "<h2 ",
    "unclosed images": "![ ",
    "unclosed image targets": "![x](a(",
    "unclosed empty links": "[](x ",
    "import lines": "import\n",
    "import lines with a brace": "import {\n",
    "export lines": "export\n",
    "fence lines": "```\n",
    "inline code spans": "`a` ",
    "block tags on one line": "<div>x</div> ",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("unit", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_cleaning_is_linear_on_adversarial_markup(unit):
    text = unit * (SIZE // len(unit))
    assert isinstance(clean_mdx(text), str)


@pytest.mark.timeout(30)
def test_a_long_heading_line_with_an_id_is_cleaned_quickly(tmp_path):
    [doc] = load(tmp_path, "long.md", "# A" + " " * SIZE + "title {#anchor}\n\nBody.\n")
    assert doc.page_content.startswith("# A") and "{#anchor}" not in doc.page_content
    assert doc.metadata["title"].endswith("title")


@pytest.mark.timeout(30)
def test_a_heading_of_hashes_gives_its_title_quickly(tmp_path):
    [doc] = load(tmp_path, "hashes.md", "# " + "#" * SIZE + "x\n")
    assert doc.metadata["title"].endswith("#x")


def test_an_image_whose_target_holds_parentheses_is_dropped_whole():
    assert clean_mdx("Before ![map](https://x.org/Map_(2020).png) after") == "Before after"


# ---- bombs that used to raise past the run ----------------------------------------------------


def test_deeply_nested_json_is_a_load_error():
    assert "nested too deeply" in fail_json("[" * 100_000 + "]" * 100_000)


def fail_json(text: str) -> str:
    with pytest.raises(LoadError) as raised:
        loaders._parse_json(text)
    return str(raised.value)


def test_a_deeply_nested_json_line_names_its_line(tmp_path):
    message = fail(tmp_path, "deep.jsonl", '{"a": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    assert message.startswith("JSON nested too deeply to read on line 2")


def test_deeply_nested_front_matter_is_a_load_error(tmp_path):
    message = fail(tmp_path, "deep.md", "---\nx: " + "[" * 100_000 + "]" * 100_000 + "\n---\nBody.\n")
    assert "front matter is nested too deeply" in message


BILLION_LAUGHS = (
    '---\na: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    + "title: Laughs\n---\n# Body\n\nText.\n"
)


def test_front_matter_aliases_are_refused_with_the_line(tmp_path):
    message = fail(tmp_path, "laughs.md", BILLION_LAUGHS)
    assert message.startswith("the front matter uses a YAML alias (`*name`) on line 3")


# ---- zip bombs --------------------------------------------------------------------------------


def docx_with_extra_part(path: Path, size: int) -> Path:
    """A real .docx plus one part of `size` zero bytes, which deflate packs about a thousand times."""
    make_docx(path)
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("word/media/padding.bin", "w", force_zip64=True) as part,
    ):
        for _ in range(size // 1_000_000):
            part.write(bytes(1_000_000))
    return path


def test_a_docx_bomb_is_refused_before_anything_is_inflated(tmp_path):
    bomb = docx_with_extra_part(tmp_path / "bomb.docx", 20_000_000)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(LoadError, match=r"part word/media/padding.bin unpacks \d+ times its packed size"):
        load_file(bomb, "bomb.docx")


def test_a_docx_that_unpacks_past_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "MAX_UNZIPPED_BYTES", 1_000_000)
    with pytest.raises(LoadError, match=r"unpacks to \d+ MB, over the 1 MB limit"):
        load_file(docx_with_extra_part(tmp_path / "big.docx", 2_000_000), "big.docx")


def test_a_docx_of_ordinary_size_still_loads(tmp_path):
    [doc] = load_file(make_docx(tmp_path / "fine.docx"), "fine.docx")
    assert "Unpack the box." in doc.page_content
