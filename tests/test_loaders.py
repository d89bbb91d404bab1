"""Loaders: one worked example per format, the errors a user sees, and the real Plausible docs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.documents import Document

from chatbot.core.errors import LoadError
from ingest.loaders import SUPPORTED_SUFFIXES, load_file

PLAUSIBLE = Path(__file__).resolve().parents[2] / "shared/kb/plausible"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def load(tmp_path: Path, name: str, content: str | bytes) -> list[Document]:
    return load_file(write(tmp_path, name, content), f"docs/{name}")


def fail(tmp_path: Path, name: str, content: str | bytes) -> str:
    with pytest.raises(LoadError) as raised:
        load(tmp_path, name, content)
    return str(raised.value)


def prose_lines(text: str) -> list[str]:
    """The lines of markdown outside ``` fences."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def test_importing_the_loaders_leaves_pdf_docx_and_torch_unloaded():
    code = "import sys, ingest.loaders; print(sorted({'torch', 'pypdf', 'docx'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_supported_suffixes():
    assert sorted(SUPPORTED_SUFFIXES) == sorted(
        [".md", ".mdx", ".markdown", ".txt", ".html", ".htm", ".pdf", ".csv", ".json", ".jsonl", ".docx"]
    )


# ---- text and markdown ------------------------------------------------------------------------


def test_a_text_file_is_one_document_titled_after_its_name(tmp_path):
    [doc] = load(tmp_path, "getting_started-guide.txt", "\ufeff  Hello\r\nworld  \n\n")
    assert doc.page_content == "Hello\nworld"
    assert doc.metadata == {
        "source": "docs/getting_started-guide.txt",
        "format": "text",
        "title": "Getting started guide",
    }


def test_markdown_front_matter_gives_the_title_and_scalar_metadata(tmp_path):
    text = (
        "---\ntitle: Install guide\nsidebar_position: 3\npublished: 2024-05-01\ndraft: false\n"
        "tags: [a, b]\nsource: elsewhere.md\nformat: odd\n---\n# Heading one\n\nBody text.\n"
    )
    [doc] = load(tmp_path, "guide.md", text)
    assert doc.page_content == "# Heading one\n\nBody text."
    assert doc.metadata == {
        "source": "docs/guide.md",
        "format": "markdown",
        "title": "Install guide",
        "sidebar_position": 3,
        "published": "2024-05-01",
        "draft": False,
    }


def test_without_front_matter_the_title_is_the_first_heading_outside_code(tmp_path):
    [doc] = load(tmp_path, "notes.markdown", "```bash\n# not a title\n```\n\nIntro.\n\n# Real title\n\n## Sub\n")
    assert doc.metadata["title"] == "Real title"


def test_without_a_heading_the_title_is_the_prettified_file_name(tmp_path):
    [doc] = load(tmp_path, "my_setup-notes.md", "Just text.")
    assert doc.metadata["title"] == "My setup notes"


def test_a_malformed_front_matter_block_is_ignored_and_the_body_kept(tmp_path):
    [doc] = load(tmp_path, "broken.md", "---\ntitle: [unclosed\n---\nBody survives.\n")
    assert (doc.page_content, doc.metadata["title"]) == ("Body survives.", "Broken")


def test_mdx_cleaning_keeps_prose_and_drops_the_machinery(tmp_path):
    text = """---
title: Setup
---
import Tabs from '@theme/Tabs';
import {Callout, Note} from "../components";
export const meta = {draft: true};

## Install

![Screenshot of the dashboard](/img/dash.png) Text after image.
[![badge](https://x/badge.svg)](https://x)

<img alt="Also dropped" src={useBaseUrl('img/x.png')} />

<!-- an HTML comment -->
{/* an MDX comment */}

<Callout type="warning" title="Heads up">Body</Callout>

<PlanFeatureNote feature="funnels" className="note" />
<Card label={"Literal label"} href={useBaseUrl('/x')} />

:::tip Want more?
Read the `<head>` guide, or `![this](is code)`.
:::

:::note[Titled note]
Note body.
:::

```js
import x from 'y';
![not an image](z)
<Callout title="kept">as is</Callout>
<!-- kept -->
```

## Tables stay {#tables}

| A | B |
|---|---|
| 1 | 2 |
"""
    [doc] = load(tmp_path, "setup.mdx", text)
    assert doc.page_content == (
        "## Install\n\nText after image.\n\nHeads up\nBody\n\nLiteral label\n\n"
        "Want more?\nRead the `<head>` guide, or `![this](is code)`.\n\nTitled note\nNote body.\n\n"
        "```js\nimport x from 'y';\n![not an image](z)\n<Callout title=\"kept\">as is</Callout>\n<!-- kept -->\n```\n\n"
        "## Tables stay\n\n| A | B |\n|---|---|\n| 1 | 2 |"
    )
    assert doc.metadata["title"] == "Setup"


def test_html_inside_markdown_becomes_markdown(tmp_path):
    text = """<head>
  <script type="application/ld+json">{`{"@type": "FAQPage"}`}</script>
</head>

<details>
<summary>Show more</summary>

Hidden text with <b>bold</b> and <a href="/x">a link</a> &amp; more.

</details>

<h3>Step 4</h3>

<table>
  <tr><th>Plan</th><th>Price</th></tr>
  <tr><td><b>Growth</b></td><td>$9 &amp; up</td></tr>
</table>

<ul>
<li>One</li>
<li>Two</li>
</ul>

<div class="browser"><img alt="Screenshot" src={useBaseUrl('img/a.png')} /></div>
<video autoPlay loop muted controls width="100%">
<source src={useBaseUrl('/video/a.mp4')} type="video/mp4" />
</video>
"""
    [doc] = load(tmp_path, "page.md", text)
    assert doc.page_content == (
        "Show more\n\nHidden text with bold and a link & more.\n\n### Step 4\n\n"
        "| Plan | Price |\n| --- | --- |\n| Growth | $9 & up |\n\n- One\n- Two"
    )


def test_text_between_two_rules_at_the_top_is_not_front_matter(tmp_path):
    [doc] = load(tmp_path, "rules.md", "---\nJust a note between rules.\n---\nBody.\n")
    assert doc.page_content == "---\nJust a note between rules.\n---\nBody."


def test_a_markdown_file_with_only_an_image_has_no_text(tmp_path):
    assert fail(tmp_path, "pic.md", "---\ntitle: Pic\n---\n![diagram](a.png)\n").startswith("no text found")


# ---- HTML -------------------------------------------------------------------------------------


def test_an_html_page_keeps_the_main_content_as_markdown(tmp_path):
    page = """<!DOCTYPE html>
<html><head><title>Returns &amp; refunds</title><style>p { color: red }</style></head>
<body>
<nav><a href="/">Home</a></nav>
<header><p>Site banner</p></header>
<main>
  <h1>Returns</h1>
  <p>You can return an item
     within <b>30 days</b>.</p>
  <!-- a comment -->
  <h2>How</h2>
  <ul><li>Pack it</li><li>Ship it</li></ul>
  <pre>step 1
  step 2</pre>
  <table><tr><th>Item</th><th>Days</th></tr><tr><td>Shoes</td><td>30</td></tr></table>
  <form><input name="q"><button>Search</button></form>
  <script>track()</script>
</main>
<footer>Copyright</footer>
</body></html>"""
    [doc] = load(tmp_path, "returns.html", page)
    assert doc.page_content == (
        "# Returns\n\nYou can return an item within 30 days.\n\n## How\n\n- Pack it\n- Ship it\n\n"
        "```\nstep 1\n  step 2\n```\n\n| Item | Days |\n| --- | --- |\n| Shoes | 30 |"
    )
    assert doc.metadata == {"source": "docs/returns.html", "format": "html", "title": "Returns & refunds"}


def test_an_html_title_falls_back_to_the_first_h1_then_the_file_name(tmp_path):
    [with_h1] = load(tmp_path, "a.htm", "<article><h1>Sizing  chart</h1><p>S, M, L</p></article>")
    [bare] = load(tmp_path, "size-guide.htm", "<p>S, M, L</p>")
    assert (with_h1.metadata["title"], bare.metadata["title"]) == ("Sizing chart", "Size guide")
    assert bare.page_content == "S, M, L"


def test_a_form_wrapping_the_whole_page_is_kept(tmp_path):
    page = '<body><form id="aspnetForm"><nav>Menu</nav><h1>Prices</h1><p>From $5.</p></form></body>'
    [doc] = load(tmp_path, "prices.html", page)
    assert doc.page_content == "# Prices\n\nFrom $5."


# ---- PDF --------------------------------------------------------------------------------------


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A minimal PDF written by hand: one Helvetica text line per line of each page."""
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>", 3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"}
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects[2] = f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode()
    for i, text in enumerate(pages):
        lines = text.splitlines()
        stream = "".join(f"BT /F1 12 Tf 72 {720 - 20 * j} Td ({line}) Tj ET\n" for j, line in enumerate(lines)).encode()
        objects[4 + 2 * i] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>"
        ).encode()
        objects[5 + 2 * i] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    info = len(objects) + 1
    objects[info] = f"<< /Title ({title}) >>".encode() if title else b"<< >>"
    out, offsets = b"%PDF-1.4\n", []
    for number in sorted(objects):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        info,
        xref,
    )
    return out


def test_a_pdf_is_one_document_per_page_with_text(tmp_path):
    docs = load(
        tmp_path, "manual.pdf", make_pdf(["Chapter one\nPlug it in.", "", "Chapter three"], title="User Manual")
    )
    assert [(d.page_content, d.metadata) for d in docs] == [
        ("Chapter one\nPlug it in.", {"source": "docs/manual.pdf", "format": "pdf", "title": "User Manual", "page": 1}),
        ("Chapter three", {"source": "docs/manual.pdf", "format": "pdf", "title": "User Manual", "page": 3}),
    ]


def test_a_pdf_without_a_title_is_named_after_the_file(tmp_path):
    [doc] = load(tmp_path, "quick_start.pdf", make_pdf(["Hello"]))
    assert doc.metadata["title"] == "Quick start"


def test_a_pdf_with_no_text_layer_suggests_ocr(tmp_path):
    message = fail(tmp_path, "scan.pdf", make_pdf(["", ""]))
    assert message.startswith("no text found") and "OCR" in message


def test_an_encrypted_pdf_says_so(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=io.BytesIO(make_pdf(["Secret"])))
    writer.encrypt("pw", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    assert "encrypted" in fail(tmp_path, "locked.pdf", buffer.getvalue())


def test_a_broken_pdf_says_it_is_not_readable(tmp_path):
    assert fail(tmp_path, "broken.pdf", b"%PDF-1.4\nthis is not really a pdf").startswith("not a readable PDF")


# ---- CSV, JSON, JSON Lines --------------------------------------------------------------------


def test_a_csv_is_one_document_per_row(tmp_path):
    docs = load(tmp_path, "catalog.csv", "SKU;Name;Price;Notes\nA-1;Widget;9,50;\nB-2;;3;fragile\n;;;\n")
    assert [(d.page_content, d.metadata) for d in docs] == [
        (
            "SKU: A-1\nName: Widget\nPrice: 9,50",
            {"source": "docs/catalog.csv", "format": "csv", "title": "Widget", "row": 1},
        ),
        (
            "SKU: B-2\nPrice: 3\nNotes: fragile",
            {"source": "docs/catalog.csv", "format": "csv", "title": "B-2", "row": 2},
        ),
    ]


def test_a_csv_row_without_a_name_column_is_titled_by_its_number(tmp_path):
    docs = load(tmp_path, "faq.csv", "question\tanswer\nCan I return it?\tYes, within 30 days.\n")
    assert docs[0].page_content == "question: Can I return it?\nanswer: Yes, within 30 days."
    assert docs[0].metadata["title"] == "faq row 1"


def test_a_json_list_is_one_document_per_object(tmp_path):
    data = [{"title": "Shipping", "days": 3, "free": True, "zones": ["EU", "US"]}, {"id": 7, "extra": {"a": 1}}]
    docs = load(tmp_path, "policies.json", json.dumps(data))
    assert [(d.page_content, d.metadata["title"], d.metadata["record"]) for d in docs] == [
        ("title: Shipping\ndays: 3\nfree: true\nzones: EU, US", "Shipping", 1),
        ('id: 7\nextra: {"a": 1}', "policies record 2", 2),
    ]
    assert docs[0].metadata["format"] == "json"


def test_a_json_wrapper_object_yields_its_list_of_records(tmp_path):
    data = {"store": "Acme", "products": [{"product": "Kettle", "price": 20}, {"sku": "T-1", "price": None}]}
    docs = load(tmp_path, "products.json", json.dumps(data))
    assert [(d.page_content, d.metadata["title"]) for d in docs] == [
        ("product: Kettle\nprice: 20", "Kettle"),
        ("sku: T-1", "T-1"),
    ]


def test_any_other_json_object_is_one_document(tmp_path):
    [doc] = load(tmp_path, "settings.json", '{"name": "Acme", "tags": [], "hours": {"mon": "9-5"}}')
    assert (doc.page_content, doc.metadata["title"]) == ('name: Acme\nhours: {"mon": "9-5"}', "Acme")


def test_json_lines_is_one_document_per_line(tmp_path):
    docs = load(tmp_path, "faq.jsonl", '{"q": "Open on Sunday?", "a": "No"}\n\n{"name": "Hours", "a": "9-5"}\n')
    assert [(d.page_content, d.metadata["record"], d.metadata["title"]) for d in docs] == [
        ("q: Open on Sunday?\na: No", 1, "faq record 1"),
        ("name: Hours\na: 9-5", 3, "Hours"),
    ]
    assert docs[0].metadata["format"] == "jsonl"


def test_invalid_json_names_the_line_and_column(tmp_path):
    message = fail(tmp_path, "bad.json", '{\n  "a": 1,\n  "b": ,\n}')
    assert message.startswith("invalid JSON at line 3, column 8")


def test_an_invalid_json_line_is_named(tmp_path):
    assert fail(tmp_path, "bad.jsonl", '{"a": 1}\n{"b": 2}\n{"c": oops}\n').startswith("invalid JSON at line 3,")


# ---- DOCX -------------------------------------------------------------------------------------


def make_docx(path: Path, *, title: str = "") -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    document.add_paragraph("Read this first.")
    document.add_heading("Setup", level=1)
    document.add_paragraph("Unpack the box.")
    document.add_paragraph("Charge it", style="List Bullet")
    document.add_heading("Specs", level=2)
    table = document.add_table(rows=2, cols=2)
    for cell, text in zip(
        table.rows[0].cells + table.rows[1].cells, ["Size", "Weight", "10 cm", "1 | 2 kg"], strict=True
    ):
        cell.text = text
    document.save(str(path))
    return path


def test_a_docx_becomes_markdown_with_headings_and_tables(tmp_path):
    [doc] = load_file(make_docx(tmp_path / "guide.docx", title="Kettle guide"), "guide.docx")
    assert doc.page_content == (
        "Read this first.\n\n# Setup\n\nUnpack the box.\n\n- Charge it\n\n## Specs\n\n"
        "| Size | Weight |\n| --- | --- |\n| 10 cm | 1 \\| 2 kg |"
    )
    assert doc.metadata == {"source": "guide.docx", "format": "docx", "title": "Kettle guide"}


def test_a_docx_without_a_title_property_uses_its_first_heading(tmp_path):
    [doc] = load_file(make_docx(tmp_path / "guide.docx"), "guide.docx")
    assert doc.metadata["title"] == "Setup"


def test_a_file_that_is_not_a_docx_says_so(tmp_path):
    assert fail(tmp_path, "old.docx", b"PK\x03\x04 not a zip").startswith("not a valid .docx file")


# ---- errors -----------------------------------------------------------------------------------


def test_a_binary_file_is_refused(tmp_path):
    assert fail(tmp_path, "image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00").startswith("looks like a binary file")


@pytest.mark.parametrize("content", [b"", b"  \n\t\n", b"\xef\xbb\xbf\n"])
def test_an_empty_file_is_refused(tmp_path, content):
    assert fail(tmp_path, "empty.txt", content).startswith("empty file")


def test_latin1_text_names_the_offset_and_the_fix(tmp_path):
    message = fail(tmp_path, "cafe.md", "Caf\u00e9 menu\n".encode("latin-1"))
    assert message.startswith("not valid UTF-8: byte 0xe9 at byte offset 3 (line 1)")
    assert "iconv -f latin1 -t utf-8" in message


def test_an_unreadable_path_is_a_load_error(tmp_path):
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(LoadError, match=r"^cannot read the file"):
        load_file(tmp_path / "folder.md", "folder.md")


def test_an_unsupported_suffix_lists_the_supported_ones(tmp_path):
    message = fail(tmp_path, "slides.pptx", b"PK")
    assert message.startswith("unsupported file type '.pptx'; supported: .csv, .docx, .htm, .html, .json")


# ---- the real Plausible docs ------------------------------------------------------------------


def test_every_plausible_page_loads_cleanly():
    if not PLAUSIBLE.is_dir():
        pytest.skip(f"the Plausible sample docs are not at {PLAUSIBLE}")
    pages = sorted(PLAUSIBLE.rglob("*.md"))
    assert pages
    for page in pages:
        docs = load_file(page, page.relative_to(PLAUSIBLE).as_posix())
        assert docs and all(doc.page_content and doc.metadata["title"] for doc in docs), page
        lines = [line for doc in docs for line in prose_lines(doc.page_content)]
        assert not [line for line in lines if line.startswith("import ")], page
        assert not [line for line in lines if "![" in line or "<img" in line or line.strip().startswith(":::")], page
