"""Clean: turn markdown/MDX prose and HTML into plain markdown that reads well as a retrieved chunk.

The trade-off: cleaning is done with small regular expressions and BeautifulSoup, not a full
markdown/MDX parser. That keeps ingestion dependency-light and predictable (code fences and inline
code are never touched), at the cost of exotic JSX (multi-line `export` blocks, expressions in
text) surviving as text. Headings are kept or produced as markdown `#` lines and tables become
markdown tables, because the splitter downstream cuts on headings and a table row reads as a row.

Every pattern runs in time linear in the text, whatever the text: a file is untrusted input, and a lazy
`<x>.*?</x>` rescans the rest of the file from every unclosed `<x>`. Elements with a closing tag are found
by `_sub_elements` (an opener whose closer is missing retires its kind), and the one-shot patterns use
possessive quantifiers and stop at the next opener, so no start position can scan past the next one.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable

from bs4 import BeautifulSoup, Tag
from bs4.element import PreformattedString

__all__ = ["clean_mdx", "html_to_markdown", "rows_to_markdown", "split_fences", "tidy"]

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"``[^\n]+?``|`[^`\n]+`")
# An import's names sit on its line, or inside one `{...}` that may span lines: an unanchored `\s`
# would let every `import` line scan on to the end of the file looking for its `from`.
_IMPORT_NAMES = r"(?:(?!from\b)[\w*$,]++|\{[^{}]*+\})"
_IMPORT = re.compile(
    rf"^(?:import[ \t]++(?:{_IMPORT_NAMES}(?:[ \t]*+{_IMPORT_NAMES})*+[ \t]++from[ \t]++)?['\"][^'\"\n]++['\"];?"
    r"|export\s++(?:const|let|var|function|default|class)\b[^\n]*)[ \t]*$",
    re.M,
)
_COMMENTS = ((re.compile(r"<(!--)"), re.compile(r"-->")), (re.compile(r"\{(/\*)"), re.compile(r"\*/\}")))
# Elements whose content is never prose: JSON-LD in <head>, scripts, media players.
_DROPPED_ELEMENT = re.compile(r"<(head|script|style|video|audio|iframe|svg|noscript)\b", re.I)
_TABLE = re.compile(r"<(table)\b", re.I)
_CODE_TAG = re.compile(r"<(code)\b", re.I)
_HEADING_TAG = re.compile(r"<(h[1-6])\b", re.I)
# Alt text and link targets stop at the next `[` or `(` (one level of nested parentheses is allowed in a
# target), so that each scan ends before the next candidate starts.
_TARGET = r"\((?:[^()]++|\([^()]*+\))*+\)"
_IMAGE = re.compile(rf"!\[[^\[\]]*+\](?:{_TARGET}|\[[^\[\]]*+\])[ \t]*+")
_EMPTY_LINK = re.compile(rf"\[\s*+\]{_TARGET}")
# An attribute value: a quoted string or a JSX expression (one level of nested braces).
_VALUE = r"""(?:"[^"]*+"|'[^']*+'|\{(?:[^{}]++|\{[^{}]*+\})*+\})"""
# Attribute names exclude `<`, so a run of unclosed tags cannot be read as one tag's attributes.
_ATTR_NAME = r"""[^\s=/>"'{}<]++"""
_ATTR = re.compile(rf"""({_ATTR_NAME})(?:\s*+=\s*+({_VALUE}))?""")
_TAG = re.compile(rf"""<(/?)([A-Za-z][\w.-]*+)((?:\s++(?:{_ATTR_NAME}(?:\s*+=\s*+{_VALUE})?|{_VALUE}))*+)\s*+(/?)>""")
_HEADING_LINE = re.compile(r"^#{1,6}[ \t][^\n]*+", re.M)
_HEADING_ID = re.compile(r"\{#[\w-]++\}[ \t]*+$")  # Docusaurus `## Title {#id}`
_ADMONITION = re.compile(r"^[ \t]*:::+[ \t]*(?:[\w-]+)?(?:\[([^\]\n]*)\])?[ \t]*(.*)$", re.M)
_PARKED = re.compile("\ue000(\\d+)\ue001")
_BLANK_TO_EOL = re.compile(r"[^\S\n]*+(?:\n|\Z)")
_MEANINGFUL_ATTRS = frozenset({"title", "label", "alt", "summary", "headline", "caption", "description", "heading"})
_BLOCK_TAG = re.compile(
    r"^(?:h[1-6]|p|div|br|hr|ul|ol|li|dl|dt|dd|table|thead|tbody|tr|th|td|pre|blockquote|details|summary"
    r"|section|article|main|aside|header|footer|nav|figure|figcaption|address)$"
)


# ---- fenced code ------------------------------------------------------------------------------


def split_fences(text: str) -> list[tuple[str, bool]]:
    """Cut text into runs of prose and of fenced code (fence lines included), in order."""
    runs: list[tuple[list[str], bool]] = []  # lines, joined at the end: adding to a string each line is quadratic
    fence: str | None = None
    for line in text.split("\n"):
        after = _next_fence(line, fence)
        is_code = fence is not None or after is not None
        if runs and runs[-1][1] == is_code:
            runs[-1][0].append(line)
        else:
            runs.append(([line], is_code))
        fence = after
    return [("\n".join(lines), is_code) for lines, is_code in runs]


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
    # The placeholder characters are private-use ones: a document's own are dropped, or it could expand them.
    text = text.replace("\ue000", "").replace("\ue001", "")
    parked: list[str] = []

    def park(value: str) -> str:
        parked.append(value)
        return f"\ue000{len(parked) - 1}\ue001"

    text = _CODE_SPAN.sub(lambda m: park(m.group(0)), text)
    text = _IMPORT.sub("", text)
    for opener, closer in _COMMENTS:
        text = _sub_elements(text, opener, lambda name, closer=closer: closer, lambda name, inner, whole: "")
    text = _sub_elements(text, _DROPPED_ELEMENT, _closing_tag, lambda name, inner, whole: "")
    text = _sub_elements(
        text, _CODE_TAG, _closing_tag, lambda name, inner, whole: park(f"`{html.unescape(inner)}`"), in_tag=True
    )
    text = _sub_elements(
        text,
        _TABLE,
        _closing_tag,
        lambda name, inner, whole: park(f"\n\n{_markdown_table(BeautifulSoup(whole, 'html.parser'))}\n\n"),
    )
    text = _sub_elements(
        text,
        _HEADING_TAG,
        _closing_tag,
        lambda name, inner, whole: f"\n\n{'#' * int(name[1])} {' '.join(_TAG.sub('', inner).split())}\n\n",
        in_tag=True,
    )
    text = _EMPTY_LINK.sub("", _IMAGE.sub("", text))
    text = _replace_tags(text)
    text = _HEADING_LINE.sub(_drop_heading_id, text)
    text = _ADMONITION.sub(lambda m: (m.group(1) or m.group(2)).strip(), text)
    text = html.unescape(text)
    return _unpark(text, parked, len(parked))


def _unpark(text: str, parked: list[str], below: int) -> str:
    # A parked table may itself hold inline code parked before it (a lower number), never after it.
    def restore(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return _unpark(parked[index], parked, index) if index < below else match.group(0)

    return _PARKED.sub(restore, text)


def _sub_elements(
    text: str,
    opener: re.Pattern[str],
    closer: Callable[[str], re.Pattern[str]],
    replace: Callable[[str, str, str], str],
    *,
    in_tag: bool = False,
) -> str:
    """Replace each `opener ... closer` span (closer: the first after the opener) by `replace(name, inner, whole)`.

    `opener` captures a name (the tag's, say); `closer(name)` is its closing pattern; with `in_tag` the inner text
    starts after the `>` that ends the opening tag. This is `re.sub` with a lazy `.*?`, in linear time: an opener
    whose closer is missing retires its name (no later opener of that name can close either), and the `>` that ends
    opening tags is looked up once per run of openers before it.
    """
    out: list[str] = []
    kept = start = 0
    retired: set[str] = set()
    tag_end = -1
    while match := opener.search(text, start):
        start = match.start() + 1  # on a miss, look again just after this opener, as re.sub does
        name = match.group(1).lower()
        if name in retired:
            continue
        inner_start = match.end()
        if in_tag:
            if tag_end < match.end():
                tag_end = text.find(">", match.end())
            if tag_end < 0:
                break  # no `>` left: no opening tag can end
            inner_start = tag_end + 1
        close = closer(name).search(text, inner_start)
        if close is None:
            retired.add(name)
            continue
        out += [
            text[kept : match.start()],
            replace(name, text[inner_start : close.start()], text[match.start() : close.end()]),
        ]
        kept = start = close.end()
    out.append(text[kept:])
    return "".join(out)


@functools.cache
def _closing_tag(name: str) -> re.Pattern[str]:
    return re.compile(rf"</{name}\s*+>", re.I)


def _drop_heading_id(match: re.Match[str]) -> str:
    line = match.group(0)
    found = _HEADING_ID.search(line)
    if found is None:
        return line
    # Strip the spaces before the id, but never the one after the `#`s.
    return line[: max(len(line[: found.start()].rstrip(" \t")), len(line) - len(line.lstrip("#")) + 1)]


def _replace_tags(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        closing, name, attrs, _ = match.groups()
        name = name.lower()
        if name == "img":
            return ""
        # A block tag breaks the line, unless the markdown already put it at the end (or start) of one.
        beside_is_blank = _blank_after(text, match.end()) if closing else _blank_before(text, match.start())
        newline = "\n" if _BLOCK_TAG.match(name) and not beside_is_blank else ""
        if closing:
            return newline
        values = [_attr_text(value) for key, value in _ATTR.findall(attrs) if key.lower() in _MEANINGFUL_ATTRS]
        return newline + "".join(f"{value}\n" for value in values if value) + ("- " if name == "li" else "")

    return _TAG.sub(replace, text)


def _blank_after(text: str, end: int) -> bool:
    # Only the whitespace right after the tag is read (a tag starts with `<`), so all tags together read
    # the text once; slicing to the end of the line from every tag would read a long line once per tag.
    return _BLANK_TO_EOL.match(text, end) is not None


def _blank_before(text: str, start: int) -> bool:
    index = start
    while index > 0 and text[index - 1] != "\n" and text[index - 1].isspace():
        index -= 1
    return index == 0 or text[index - 1] == "\n"


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
