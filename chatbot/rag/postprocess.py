"""The "parse" step: turn what a small model streams into what the user sees.

Three repairs, each cheap and visible in the `Answer`: a reply that starts
repeating a sentence is cut there (135M models loop under greedy decoding, and a
repetition penalty would also stop them copying the context); a chain-of-thought
reply shows only what follows "Answer:"; and an answer that cites nothing gets the
numbers of the passages it demonstrably draws on (most of its words appear there),
appended at the end so the streamed text never changes behind the reader's back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from chatbot.rag.sparse import terms

_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?](?=\d))*[.!?\n]")  # "6.0" does not end a sentence
_ANSWER_MARK = re.compile(r"^\s*\**answer\**\s*:\**\s*", re.IGNORECASE | re.MULTILINE)
_CITATION = re.compile(r"\[(\d+)\]")
MIN_REPEAT_CHARS = 12
SUPPORT = 0.6  # share of a sentence's words that must appear in a passage to count as drawn from it


def cut_loop(text: str) -> tuple[str, bool]:
    """(the part of `text` safe to show, whether the model has started repeating a sentence)."""
    seen: set[str] = set()
    end = 0
    for match in _SENTENCE.finditer(text):
        key = match.group().strip().lower()
        if len(key) >= MIN_REPEAT_CHARS and key in seen:
            return text[: match.start()].rstrip(), True
        seen.add(key)
        end = match.end()
    tail = text[end:].strip().lower()
    if tail and any(sentence.startswith(tail) for sentence in seen if len(sentence) >= MIN_REPEAT_CHARS):
        return text[:end], False  # hold back what may be the start of a repeat, until it differs
    return text, False


def visible_answer(text: str) -> str | None:
    """What a chain-of-thought reply shows the user so far: the text after 'Answer:', if any."""
    marker = _ANSWER_MARK.search(text)
    return None if marker is None else text[marker.end() :]


def split_reasoning(text: str) -> tuple[str | None, str]:
    """Split a chain-of-thought reply into (reasoning, answer); a reply without 'Answer:' is all answer."""
    marker = _ANSWER_MARK.search(text)
    if marker is None:
        return None, text.strip()
    reasoning = re.sub(r"^\s*\**reasoning\**\s*:\s*", "", text[: marker.start()], flags=re.IGNORECASE).strip()
    return reasoning or None, text[marker.end() :].strip()


def cited_numbers(text: str) -> list[int]:
    """The passage numbers an answer cites, in order of first appearance."""
    return list(dict.fromkeys(int(number) for number in _CITATION.findall(text)))


def supporting_passages(text: str, passages: Sequence[str], *, question: str = "") -> list[int]:
    """1-based numbers of the passages that most of some sentence of `text` is drawn from.

    Only the words a sentence adds to the question count as evidence: an answer echoes the
    question's words whether or not it found anything.
    """
    vocabularies = [set(terms(passage)) for passage in passages]
    if not vocabularies:
        return []
    echoed = set(terms(question))
    found: dict[int, None] = {}
    for match in _SENTENCE.finditer(text + "\n"):
        words = set(terms(match.group()))
        added = words - echoed
        if len(words) < 3 or not added:
            continue
        shares = [len(added & vocabulary) / len(added) for vocabulary in vocabularies]
        if max(shares) >= SUPPORT:
            found.setdefault(shares.index(max(shares)) + 1, None)
    return list(found)


# Phrases that say the answer is not available. Each names the speaker ("I") or the
# documents as its subject, so that "If you cannot find the Print button" or "Starter
# does not include webhooks" in a real answer is not mistaken for a refusal.
_DOCS = (
    r"(?:context|passages?|help cent(?:re|er)|knowledge base|documentation|docs|articles?|information|text|sources?)"
)
_REFUSAL = re.compile(
    "|".join(
        [
            r"\bI (?:do not|don't|dont) know\b",
            r"\bI (?:do not|don't) have (?:any |enough )?(?:information|details|data)\b",
            r"\bI (?:cannot|can't|can not|could not|couldn't|am unable to|'m unable to) (?:find|see|answer|tell|say)\b",
            rf"\b{_DOCS} (?:provided )?(?:does not|doesn't|do not|don't)(?: seem to)? "
            r"(?:cover|mention|say|state|contain|include|provide|specify|explain)\b",
            r"\bnot (?:mentioned|covered|stated|specified|found|described) (?:in|by) (?:the )?(?:provided )?" + _DOCS,
            r"\bis not mentioned\b",
            r"\bno (?:information|mention|details)(?: is given)? (?:about|on|of|regarding)\b",
        ]
    ),
    re.IGNORECASE,
)


def is_refusal(text: str) -> bool:
    """Whether an answer says it cannot answer (the engine's "I don't know", "the context does not cover", ...)."""
    return bool(_REFUSAL.search(text.replace("\u2019", "'")))
