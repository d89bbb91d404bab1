"""Loaders: read one file of a supported type into LangChain documents of plain text or markdown.

The trade-off: cleaning is done with small regular expressions and BeautifulSoup, not a full
markdown/MDX parser. That keeps ingestion dependency-light and predictable (code fences and inline
code are never touched), at the cost of exotic JSX (multi-line `export` blocks, expressions in
text) surviving as text. Headings are kept or produced as markdown `#` lines because the splitter
downstream cuts on them; structured files (CSV, JSON) become one small document per record so a
retrieved chunk is one whole row.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from bs4 import BeautifulSoup, Tag
from bs4.element import PreformattedString
from langchain_core.documents import Document

from chatbot.errors import LoadError

_FORMAT_BY_SUFFIX = {
    ".md": "markdown",
    ".mdx": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".docx": "docx",
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_FORMAT_BY_SUFFIX)

# One part of a file: its text and its metadata (title and, say, a page number).
_Part = tuple[str, dict[str, Any]]


def load_file(path: Path, source: str) -> list[Document]:
    """Read one file into documents; raise LoadError with a reason a user can act on."""
    fmt = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise LoadError(f"unsupported file type {path.suffix or '(no extension)'!r}; supported: {supported}")
    try:
        parts = _LOADERS[fmt](path)
    except OSError as err:
        raise LoadError(f"cannot read the file: {err.strerror or err}; check that it exists and is readable") from err
    documents = [
        Document(page_content=text.strip(), metadata={"source": source, "format": fmt, **meta})
        for text, meta in parts
        if text.strip()
    ]
    if not documents:
        ocr = " (a scanned image PDF? run OCR on it first, e.g. `ocrmypdf in.pdf out.pdf`)" if fmt == "pdf" else ""
        raise LoadError(f"no text found in this {fmt} file{ocr}; add text to it or remove it")
    return documents


# ---- text files -------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise LoadError("looks like a binary file (it contains NUL bytes); remove it or give it its real extension")
    try:
        # Strict UTF-8 rather than guessing: a wrong guess silently garbles every accented letter.
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        name = shlex.quote(str(path))
        raise LoadError(
            f"not valid UTF-8: byte 0x{data[err.start]:02x} at byte offset {err.start} (line {line}); "
            f"convert it, e.g. `iconv -f latin1 -t utf-8 {name} > {name}.new`, or re-save it as UTF-8"
        ) from err
    if not text.strip():
        raise LoadError("empty file (no text, or only whitespace); add content or remove it")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _load_text(path: Path) -> list[_Part]:
    return [(_read_text(path), {"title": _pretty(path.stem)})]


def _pretty(stem: str) -> str:
    words = re.sub(r"[-_]+", " ", stem).strip()
    return words[:1].upper() + words[1:]


# ---- markdown / MDX ---------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?---[ \t]*(?:\n|\Z)", re.S)
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"``[^\n]+?``|`[^`\n]+`")
_IMPORT = re.compile(
    r"^(?:import\s+(?:[\w*$\s{},]+?\s+from\s+)?['\"][^'\"\n]+['\"];?"
    r"|export\s+(?:const|let|var|function|default|class)\b[^\n]*)[ \t]*$",
    re.M,
)
_COMMENT = re.compile(r"<!--.*?-->|\{/\*.*?\*/\}", re.S)
# Elements whose content is never prose: JSON-LD in <head>, scripts, media players.
_DROPPED_ELEMENT = re.compile(r"<(head|script|style|video|audio|iframe|svg|noscript)\b.*?</\1\s*>", re.S | re.I)
_TABLE = re.compile(r"<table\b.*?</table\s*>", re.S | re.I)
_CODE_TAG = re.compile(r"<code\b[^>]*>(.*?)</code\s*>", re.S | re.I)
_HEADING_TAG = re.compile(r"<h([1-6])\b[^>]*>(.*?)</h\1\s*>", re.S | re.I)
_IMAGE = re.compile(r"!\[[^\]]*\](?:\([^)]*\)|\[[^\]]*\])[ \t]*")
_EMPTY_LINK = re.compile(r"\[\s*\]\([^)]*\)")
# An attribute value: a quoted string or a JSX expression (one level of nested braces).
_VALUE = r"""(?:"[^"]*"|'[^']*'|\{(?:[^{}]|\{[^{}]*\})*\})"""
_ATTR = re.compile(rf"""([^\s=/>"'{{}}]+)(?:\s*=\s*({_VALUE}))?""")
_TAG = re.compile(rf"""<(/?)([A-Za-z][\w.-]*)((?:\s+(?:[^\s=/>"'{{}}]+(?:\s*=\s*{_VALUE})?|{_VALUE}))*)\s*(/?)>""")
_HEADING_ID = re.compile(r"^(#{1,6}[ \t].*?)[ \t]*\{#[\w-]+\}[ \t]*$", re.M)  # Docusaurus `## Title {#id}`
_ADMONITION = re.compile(r"^[ \t]*:::+[ \t]*(?:[\w-]+)?(?:\[([^\]\n]*)\])?[ \t]*(.*)$", re.M)
_MEANINGFUL_ATTRS = frozenset({"title", "label", "alt", "summary", "headline", "caption", "description", "heading"})
_BLOCK_TAG = re.compile(
    r"^(?:h[1-6]|p|div|br|hr|ul|ol|li|dl|dt|dd|table|thead|tbody|tr|th|td|pre|blockquote|details|summary"
    r"|section|article|main|aside|header|footer|nav|figure|figcaption|address)$"
)


def _load_markdown(path: Path) -> list[_Part]:
    meta, body = _front_matter(_read_text(path))
    body = _clean_mdx(body)
    title = str(meta.pop("title", "")).strip() or _first_heading(body) or _pretty(path.stem)
    return [(body, {"title": title, **meta})]


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        data = yaml.safe_load(match.group(1) or "") or {}
    except yaml.YAMLError:
        data = {}  # a broken block is still meant as metadata, not prose: drop it, keep the body
    if not isinstance(data, dict):
        return {}, text  # plain text between two `---` rules, not front matter
    meta: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dt.date):
            value = value.isoformat()
        if isinstance(key, str) and isinstance(value, str | int | float | bool) and key not in {"source", "format"}:
            meta[key] = value
    return meta, text[match.end() :]


def _first_heading(body: str) -> str:
    for chunk, is_code in _split_fences(body):
        if not is_code and (match := re.search(r"^#[ \t]+(.+?)[ \t#]*$", chunk, re.M)):
            return match.group(1)
    return ""


def _split_fences(text: str) -> list[tuple[str, bool]]:
    """Cut text into runs of prose and of fenced code (fence lines included), in order."""
    runs: list[tuple[str, bool]] = []
    fence: str | None = None
    for line in text.split("\n"):
        after = _next_fence(line, fence)
        is_code = fence is not None or after is not None
        if runs and runs[-1][1] == is_code:
            runs[-1] = (runs[-1][0] + "\n" + line, is_code)
        else:
            runs.append((line, is_code))
        fence = after
    return runs


def _next_fence(line: str, fence: str | None) -> str | None:
    match = _FENCE.match(line)
    if not match:
        return fence
    if fence is None:
        return match.group(1)
    closes = match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) and not line[match.end() :].strip()
    return None if closes else fence


def _clean_mdx(body: str) -> str:
    return _tidy("\n".join(chunk if is_code else _clean_prose(chunk) for chunk, is_code in _split_fences(body)))


def _clean_prose(text: str) -> str:
    # Inline code is parked behind placeholders so that `<head>` or `![x](y)` written as code survive.
    parked: list[str] = []

    def park(value: str) -> str:
        parked.append(value)
        return f"\ue000{len(parked) - 1}\ue001"

    text = _CODE_SPAN.sub(lambda m: park(m.group(0)), text)
    text = _IMPORT.sub("", text)
    text = _COMMENT.sub("", text)
    text = _DROPPED_ELEMENT.sub("", text)
    text = _CODE_TAG.sub(lambda m: park(f"`{html.unescape(m.group(1))}`"), text)
    text = _TABLE.sub(lambda m: park(f"\n\n{_markdown_table(BeautifulSoup(m.group(0), 'html.parser'))}\n\n"), text)
    text = _HEADING_TAG.sub(
        lambda m: f"\n\n{'#' * int(m.group(1))} {' '.join(_TAG.sub('', m.group(2)).split())}\n\n", text
    )
    text = _EMPTY_LINK.sub("", _IMAGE.sub("", text))
    text = _TAG.sub(_replace_tag, text)
    text = _HEADING_ID.sub(r"\1", text)
    text = _ADMONITION.sub(lambda m: (m.group(1) or m.group(2)).strip(), text)
    text = html.unescape(text)
    # Restore newest first: a parked table may itself hold parked inline code.
    for index in reversed(range(len(parked))):
        text = text.replace(f"\ue000{index}\ue001", parked[index])
    return text


def _replace_tag(match: re.Match[str]) -> str:
    closing, name, attrs, _ = match.groups()
    name = name.lower()
    if name == "img":
        return ""
    # A block tag breaks the line, unless the markdown already put it at the end (or start) of one.
    text, start, end = match.string, match.start(), match.end()
    if closing:
        stop = text.find("\n", end)
        beside = text[end : stop if stop >= 0 else len(text)]
    else:
        beside = text[text.rfind("\n", 0, start) + 1 : start]
    newline = "\n" if _BLOCK_TAG.match(name) and beside.strip() else ""
    if closing:
        return newline
    values = [_attr_text(value) for key, value in _ATTR.findall(attrs) if key.lower() in _MEANINGFUL_ATTRS]
    return newline + "".join(f"{value}\n" for value in values if value) + ("- " if name == "li" else "")


def _attr_text(value: str) -> str:
    # Only literal strings carry text; `{useBaseUrl('...')}` and the like are code.
    if value[:1] == "{":
        value = value[1:-1].strip()
        if not re.fullmatch(r"""(["'`]).*\1""", value, re.S):
            return ""
    return value[1:-1].strip()


def _tidy(text: str, *, dedent: bool = False) -> str:
    """Trim line ends and squeeze runs of blank lines, leaving fenced code exactly as written."""
    lines: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        after = _next_fence(line, fence)
        if fence is None:
            line = line.strip() if dedent else line.rstrip()
            if not line and (not lines or not lines[-1]):
                continue
        lines.append(line)
        fence = after
    return "\n".join(lines).strip()


# ---- HTML -------------------------------------------------------------------------------------

_HTML_NOISE = ("script", "style", "nav", "header", "footer", "aside", "noscript", "template", "form")


def _load_html(path: Path) -> list[_Part]:
    soup = BeautifulSoup(_read_text(path), "html.parser")
    # Look for the title first: an article's <h1> often sits in a <header>, which is dropped below.
    title_tag = soup.title or soup.find("h1")
    title = " ".join(title_tag.get_text().split()) if title_tag else ""
    for tag in soup.find_all(_HTML_NOISE):
        # ASP.NET-style pages wrap the whole page in one <form>: keep a form that holds the content.
        if not (tag.name == "form" and tag.find(["main", "article", "h1"])):
            tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    return [(_html_to_markdown(root), {"title": title or _pretty(path.stem)})]


def _html_to_markdown(root: Tag) -> str:
    for node in root.find_all(string=True):
        if isinstance(node, PreformattedString):
            node.extract()  # comments, doctype, processing instructions: not page text
        elif not node.find_parent("pre"):
            node.replace_with(re.sub(r"\s+", " ", node))
    for pre in root.find_all("pre"):
        pre.replace_with(f"\n\n```\n{pre.get_text().strip(chr(10))}\n```\n\n")
    for table in root.find_all("table"):
        table.replace_with(f"\n\n{_markdown_table(table)}\n\n")
    for heading in root.find_all(re.compile(r"^h[1-6]$")):
        heading.replace_with(f"\n\n{'#' * int(heading.name[1])} {' '.join(heading.get_text().split())}\n\n")
    for block in root.find_all(_BLOCK_TAG):
        block.insert_before("\n")
        if block.name == "li":
            block.insert(0, "- ")  # and no line break after it, so a list stays tight
        else:
            block.insert_after("\n")
    return _tidy(root.get_text(), dedent=True)


def _markdown_table(table: Tag) -> str:
    rows = [
        [" ".join(cell.get_text().split()).replace("|", r"\|") for cell in row.find_all(["th", "td"])]
        for row in table.find_all("tr")
    ]
    return _rows_to_markdown([row for row in rows if row])


def _rows_to_markdown(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + " --- |" * width)
    return "\n".join(lines)


# ---- records: CSV, JSON, JSON Lines -----------------------------------------------------------

_TITLE_KEYS = ("name", "title", "product", "sku")


def _load_csv(path: Path) -> list[_Part]:
    text = _read_text(path)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel  # one column, or too little text to tell: plain commas
    reader = csv.DictReader(io.StringIO(text), dialect=dialect, restkey="extra")
    parts: list[_Part] = []
    try:
        for number, row in enumerate(reader, 1):
            record = {key.strip(): value for key, value in row.items()}
            parts.append(_record_part(record, {"row": number}, f"{path.stem} row {number}"))
    except csv.Error as err:
        raise LoadError(f"not valid CSV at line {reader.line_num}: {err}; fix the quoting on that line") from err
    return parts


def _load_json(path: Path) -> list[_Part]:
    records = enumerate(_records(_parse_json(_read_text(path))), 1)
    return [_record_part(record, {"record": number}, f"{path.stem} record {number}") for number, record in records]


def _load_jsonl(path: Path) -> list[_Part]:
    # The record number is the line number, so a user can find the record in the file.
    lines = enumerate(_read_text(path).split("\n"), 1)
    records = [(number, _parse_json(line, number)) for number, line in lines if line.strip()]
    return [_record_part(record, {"record": number}, f"{path.stem} record {number}") for number, record in records]


def _parse_json(text: str, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {line or err.lineno}, column {err.colno}"
        raise LoadError(f"invalid JSON at {where}: {err.msg}; fix the syntax there") from err


def _records(data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        # {"products": [{...}, ...]} is a wrapper around the records we want.
        for value in data.values():
            if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
                return value
    return [data]


def _record_part(record: Any, meta: dict[str, Any], fallback_title: str) -> _Part:
    if not isinstance(record, dict):
        return (_render(record), {"title": fallback_title, **meta})
    lines = [f"{key}: {text}" for key, value in record.items() if (text := _render(value))]
    # Priority, not column order: a product's name reads better as a title than its SKU.
    by_key = {str(key).lower(): _render(value) for key, value in record.items()}
    title = next((by_key[key] for key in _TITLE_KEYS if by_key.get(key)), fallback_title)
    return ("\n".join(lines), {"title": title, **meta})


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ", ".join(value)  # extra CSV cells, or a list of tags
    return json.dumps(value, ensure_ascii=False)


# ---- binary formats: PDF, DOCX ----------------------------------------------------------------


def _load_pdf(path: Path) -> list[_Part]:
    # Imported here: only ingestion of PDFs pays for pypdf.
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise FileNotDecryptedError("a password is needed")
        title = ((reader.metadata.title if reader.metadata else None) or "").strip() or _pretty(path.stem)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (FileNotDecryptedError, DependencyError) as err:
        raise LoadError(f"the PDF is encrypted ({err}); save an unencrypted copy and ingest that") from err
    except Exception as err:  # a damaged PDF can fail anywhere inside pypdf, with any error type
        raise LoadError(f"not a readable PDF ({type(err).__name__}: {err}); re-export or re-save it as PDF") from err
    return [(_tidy(text), {"title": title, "page": number}) for number, text in enumerate(pages, 1)]


def _load_docx(path: Path) -> list[_Part]:
    # Imported here: only ingestion of Word files pays for python-docx.
    import docx
    from docx.table import Table

    try:
        document = docx.Document(str(path))
    except Exception as err:  # python-docx reports a bad zip, a missing part or a .doc file in many ways
        raise LoadError(f"not a valid .docx file ({err}); open it in Word or LibreOffice and save it as .docx") from err
    blocks: list[str] = []
    first_heading = ""
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = [[" ".join(cell.text.split()).replace("|", r"\|") for cell in row.cells] for row in item.rows]
            blocks.append(_rows_to_markdown(rows))
            continue
        text, style = item.text.strip(), item.style.name if item.style is not None else ""
        if level := re.fullmatch(r"Heading (\d)", style):
            first_heading = first_heading or text
            text = f"{'#' * min(int(level.group(1)), 6)} {text}" if text else ""
        elif style.startswith("List Bullet") and text:
            text = f"- {text}"
        blocks.append(text)
    title = (document.core_properties.title or "").strip() or first_heading or _pretty(path.stem)
    return [("\n\n".join(block for block in blocks if block), {"title": title})]


_LOADERS: dict[str, Callable[[Path], list[_Part]]] = {
    "markdown": _load_markdown,
    "text": _load_text,
    "html": _load_html,
    "pdf": _load_pdf,
    "csv": _load_csv,
    "json": _load_json,
    "jsonl": _load_jsonl,
    "docx": _load_docx,
}
