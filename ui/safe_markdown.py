"""Text from documents and from the model, made safe to hand to Streamlit's Markdown.

Streamlit renders Markdown in `st.markdown`, captions, messages and expander labels, and
Markdown images (`![x](http://...)`, `![x][ref]`) make the reader's browser fetch any URL a
document or an answer names. So names and titles go in as plain text (every Markdown
character escaped), and answers keep their Markdown (lists, bold, code, links) less images,
raw HTML and `$` (which would start LaTeX: "$49 or $99" is a price, not a formula). Code
spans and fenced blocks are left as they are: Markdown shows them literally already.
"""

from __future__ import annotations

import re
import string

_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
# A fence opens with 3+ backticks or tildes (a backtick fence's info string has no backtick).
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}(?=[^`]*$)|~{3,})")
# In prose: an existing backslash escape (kept as is), an image opener, a raw HTML opener, a dollar.
_UNSAFE = re.compile(r"\\[\s\S]|!\[|[<$]")
_ESCAPE_OR_TICKS = re.compile(r"\\[\s\S]|`+")


def plain(text: str) -> str:
    """`text` as Markdown that shows exactly that text, on one line: for titles, sections and file names."""
    # CommonMark lets any ASCII punctuation be backslash-escaped, so escaping all of it is always right.
    return _PUNCTUATION.sub(r"\\\1", " ".join(str(text).split()))


def code_span(text: str) -> str:
    """`text` as an inline code span, however many backticks it holds itself."""
    text = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def safe_markdown(text: str) -> str:
    """An answer's Markdown with images, raw HTML and `$` escaped outside code; everything else kept."""
    return "".join(piece if is_code else _neutralise_inline(piece) for is_code, piece in _split_fences(text))


def _neutralise(prose: str) -> str:
    return _UNSAFE.sub(lambda m: m[0] if m[0].startswith("\\") else m[0][:-1] + "\\" + m[0][-1], prose)


def _neutralise_inline(prose: str) -> str:
    """Escape the prose between inline code spans; a backtick run with no closing run of its length is prose."""
    out, start, at = [], 0, 0
    while (opener := _ESCAPE_OR_TICKS.search(prose, at)) is not None:
        at = opener.end()
        if opener[0].startswith("\\"):
            continue
        run = opener[0]
        # A code span ends on its own line here (a blank line, list item or heading between two
        # backticks would otherwise pass as code), and never spans a table cell: over-escaping is safe.
        line_end = prose.find("\n", at)
        closer = re.compile(rf"(?<!`){run}(?!`)").search(prose, at, len(prose) if line_end < 0 else line_end)
        if closer is None or "|" in prose[at : closer.start()]:
            continue
        out += [_neutralise(prose[start : opener.start()]), prose[opener.start() : closer.end()]]
        start = at = closer.end()
    out.append(_neutralise(prose[start:]))
    return "".join(out)


def _split_fences(text: str) -> list[tuple[bool, str]]:
    """(is_code, piece) in order: fenced code blocks (an unclosed one runs to the end) and the prose between."""
    pieces: list[tuple[bool, str]] = []
    prose: list[str] = []
    block: list[str] = []
    fence = ""
    for line in str(text).splitlines(keepends=True):
        if not fence:
            if match := _FENCE_OPEN.match(line):
                fence = match[1]
                pieces.append((False, "".join(prose)))
                prose, block = [], [line]
            else:
                prose.append(line)
            continue
        block.append(line)
        if re.fullmatch(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*\r?\n?", line):
            pieces.append((True, "".join(block)))
            block, fence = [], ""
    pieces += [(True, "".join(block)), (False, "".join(prose))]
    return [(is_code, piece) for is_code, piece in pieces if piece]
