"""Clean: turn markdown/MDX prose and HTML into plain markdown that reads well as a retrieved chunk.

The trade-off: cleaning is done with small regular expressions and BeautifulSoup, not a full
markdown/MDX parser. That keeps ingestion dependency-light and predictable (code fences and inline
code are never touched), at the cost of exotic JSX (multi-line `export` blocks, expressions in
text) surviving as text. Headings are kept or produced as markdown `#` lines and tables become
markdown tables, because the splitter downstream cuts on headings and a table row reads as a row.
"""

from __future__ import annotations

import html
import re

from bs4 import BeautifulSoup, Tag
from bs4.element import PreformattedString

__all__ = ["clean_mdx", "html_to_markdown", "rows_to_markdown", "split_fences", "tidy"]

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


# ---- fenced code ------------------------------------------------------------------------------


def split_fences(text: str) -> list[tuple[str, bool]]:
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


def tidy(text: str, *, dedent: bool = False) -> str:
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


# ---- markdown / MDX ---------------------------------------------------------------------------


def clean_mdx(body: str) -> str:
    """Strip MDX/HTML markup from the prose of a markdown body, leaving its fenced code as written."""
    return tidy("\n".join(chunk if is_code else _clean_prose(chunk) for chunk, is_code in split_fences(body)))


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


# ---- HTML -------------------------------------------------------------------------------------


def html_to_markdown(root: Tag) -> str:
    """Render an HTML element as markdown text: headings, lists, tables and code blocks kept (edits root)."""
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
    return tidy(root.get_text(), dedent=True)


# ---- tables -----------------------------------------------------------------------------------


def _markdown_table(table: Tag) -> str:
    rows = [
        [" ".join(cell.get_text().split()).replace("|", r"\|") for cell in row.find_all(["th", "td"])]
        for row in table.find_all("tr")
    ]
    return rows_to_markdown([row for row in rows if row])


def rows_to_markdown(rows: list[list[str]]) -> str:
    """Render rows of cell text as a markdown table, the first row as its header; '' for no rows."""
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + " --- |" * width)
    return "\n".join(lines)
