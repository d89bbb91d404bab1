"""Loaders: read one file of a supported type into LangChain documents of plain text or markdown.

Each format has one loader that returns the file's parts (text plus metadata such as a title); the
markup cleaning they share lives in `ingest.clean`. Structured files (CSV, JSON) become one small
document per record so a retrieved chunk is one whole row.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import shlex
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from bs4 import BeautifulSoup
from langchain_core.documents import Document

from chatbot.core.errors import LoadError
from ingest.clean import clean_mdx, html_to_markdown, rows_to_markdown, split_fences, tidy

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
# A .docx is a zip that python-docx inflates whole into memory: a few MB of zeros can unpack to gigabytes.
MAX_UNZIPPED_BYTES = 500 * 1024 * 1024
MAX_ZIP_RATIO = 200  # text XML packs 5-20x; a part that packs tighter than this is padding, not a document

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
_H1 = re.compile(r"^#[ \t]++([^\n]+)", re.M)


class _FrontMatterLoader(yaml.SafeLoader):
    """YAML without aliases: `*name` repeats a value by reference, so a few lines can stand for billions of values."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            line = self.peek_event().start_mark.line + 2  # + the `---` line, and 1-based
            raise LoadError(
                f"the front matter uses a YAML alias (`*name`) on line {line}; aliases are not read there, "
                "because a few of them can stand for billions of values: write the value out instead"
            )
        return super().compose_node(parent, index)


def _load_markdown(path: Path) -> list[_Part]:
    meta, body = _front_matter(_read_text(path))
    body = clean_mdx(body)
    title = str(meta.pop("title", "")).strip() or _first_heading(body) or _pretty(path.stem)
    return [(body, {"title": title, **meta})]


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        data = yaml.load(match.group(1) or "", Loader=_FrontMatterLoader) or {}  # a SafeLoader, less aliases
    except yaml.YAMLError:
        data = {}  # a broken block is still meant as metadata, not prose: drop it, keep the body
    except RecursionError as err:
        raise LoadError("the front matter is nested too deeply to read (thousands of `[` or `{`); flatten it") from err
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
    for chunk, is_code in split_fences(body):
        if not is_code and (match := _H1.search(chunk)):
            # rstrip, not a lazy `(.+?)[ \t#]*$`: that retries the tail from every character of a long line.
            return match.group(1).rstrip(" \t#") or match.group(1)[0]
    return ""


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
    return [(html_to_markdown(root), {"title": title or _pretty(path.stem)})]


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
    except RecursionError as err:
        where = f" on line {line}" if line else ""
        raise LoadError(f"JSON nested too deeply to read{where} (thousands of `[` or `{{`); flatten it") from err


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
    return [(tidy(text), {"title": title, "page": number}) for number, text in enumerate(pages, 1)]


def _load_docx(path: Path) -> list[_Part]:
    # Imported here: only ingestion of Word files pays for python-docx.
    import docx
    from docx.table import Table

    _check_unzipped_size(path)
    try:
        document = docx.Document(str(path))
    except Exception as err:  # python-docx reports a bad zip, a missing part or a .doc file in many ways
        raise LoadError(f"not a valid .docx file ({err}); open it in Word or LibreOffice and save it as .docx") from err
    blocks: list[str] = []
    first_heading = ""
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = [[" ".join(cell.text.split()).replace("|", r"\|") for cell in row.cells] for row in item.rows]
            blocks.append(rows_to_markdown(rows))
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


def _check_unzipped_size(path: Path) -> None:
    """Refuse a zip whose central directory says it inflates past the limits, before anything is inflated."""
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
    except zipfile.BadZipFile:
        return  # not a zip at all: the loader says what it is not
    fix = "open it in Word or LibreOffice and save it again, or split it"
    total = sum(part.file_size for part in parts)
    if total > MAX_UNZIPPED_BYTES:
        raise LoadError(
            f"unpacks to {total / 1e6:.0f} MB, over the {MAX_UNZIPPED_BYTES / 1e6:.0f} MB limit "
            f"(a zip bomb, or a document mostly of pictures); {fix}"
        )
    for part in parts:
        ratio = part.file_size / max(part.compress_size, 1)
        if part.file_size > 1_000_000 and ratio > MAX_ZIP_RATIO:
            raise LoadError(
                f"its part {part.filename} unpacks {ratio:.0f} times its packed size ({part.file_size / 1e6:.0f} MB), "
                f"over the {MAX_ZIP_RATIO}x a real document reaches (a zip bomb?); {fix}"
            )


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
