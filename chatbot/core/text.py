"""Text helpers that ingestion, chat, the Compare page and run comparisons need."""

import difflib


def heading_path(title: str, section: str) -> str:
    """'Title > Section > Sub', or just the title: where a chunk sits in its page."""
    return f"{title} > {section}" if section else title


def word_diff(base: str, other: str) -> str:
    """A word-level diff: '- words only in base' and '+ words only in other', one change a line."""
    before, after = base.split(), other.split()
    lines = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if tag in ("delete", "replace"):
            lines.append("- " + " ".join(before[i1:i2]))
        if tag in ("insert", "replace"):
            lines.append("+ " + " ".join(after[j1:j2]))
    return "\n".join(lines)


def similarity(base: str, other: str) -> float:
    """Share of words the two answers have in common, in order (1.0 = same words)."""
    return difflib.SequenceMatcher(a=base.split(), b=other.split(), autojunk=False).ratio()
