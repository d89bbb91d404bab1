"""Training pairs: read and check a pairs file, then turn each pair into token ids and labels.

A line is either a whole conversation, `{"messages": [..., {"role": "assistant", ...}]}`,
or a question the engine would be asked, `{"question", "answer", "context"?, "strategy"?}`.
The second kind is rendered with the engine's own prompt builder (`chatbot.rag.prompts`), so
the adapter learns on exactly the prompts it will see: with `context` (a list of
`{"title", "section", "text"}` passages) it gets the RAG prompt, without it the plain one.

The loss covers only the answer: the prompt's labels are -100. The answer's tokens are
whatever the chat template puts after the generation prompt (the text and the end-of-turn
marker), found by rendering the conversation with and without the answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.core.errors import TrainingDataError
from chatbot.rag.prompts import Examples, Passage, build_messages, chat_dicts, parse_strategy

IGNORE = -100  # the label value that PyTorch's cross-entropy skips
ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class Pair:
    """One training example: the prompt's messages and the answer the model should give."""

    messages: list[dict[str, str]]
    answer: str
    line: int


def load_pairs(path: Path, examples: Examples | None = None) -> list[Pair]:
    """Every pair in a jsonl file; the first bad line stops everything with its number and the fix."""
    examples = examples or Examples.load()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TrainingDataError(f"{path} cannot be read ({error}): pass a UTF-8 jsonl file of pairs.") from error
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            pairs.append(_pair(item, number, examples))
        except (json.JSONDecodeError, ValueError, TypeError, KeyError) as error:
            raise TrainingDataError(
                f"{path}, line {number}: {error}. Each line must be "
                '{"question": ..., "answer": ..., "context": [{"title", "section", "text"}]?} '
                'or {"messages": [..., {"role": "assistant", "content": ...}]}.'
            ) from error
    if not pairs:
        raise TrainingDataError(f"{path} holds no pairs: add one JSON object per line.")
    return pairs


def _pair(item: Any, line: int, examples: Examples) -> Pair:
    if not isinstance(item, dict):
        raise ValueError(f"expected a JSON object, found {type(item).__name__}")
    if "messages" in item:
        messages = item["messages"]
        if not isinstance(messages, list) or len(messages) < 2:
            raise ValueError('"messages" must list at least a user and an assistant message')
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise ValueError(f"each message needs a role in {sorted(ROLES)}, found {message!r}")
            _text(message, "content")
        if messages[-1]["role"] != "assistant":
            raise ValueError("the last message must be the assistant's answer")
        return Pair([dict(m) for m in messages[:-1]], messages[-1]["content"], line)
    question, answer = _text(item, "question"), _text(item, "answer")
    context = item.get("context")
    if context is not None and not isinstance(context, list):
        raise ValueError('"context" must be a list of passages or null')
    passages = [Passage(_text(p, "title"), str(p.get("section", "")), _text(p, "text")) for p in context or []]
    messages = build_messages(
        question,
        passages,
        strategy=parse_strategy(item.get("strategy", "zero-shot")),
        examples=examples,
        use_retrieval=context is not None,
    )
    return Pair(chat_dicts(messages), answer, line)


def _text(item: Any, key: str) -> str:
    if not isinstance(item, dict):
        raise ValueError(f"expected an object with {key!r}, found {item!r}")
    value = item[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key!r} must be non-empty text")
    return value


def encode(pair: Pair, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer, and labels that are -100 over the prompt."""
    prompt = tokenizer.apply_chat_template(pair.messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*pair.messages, {"role": "assistant", "content": pair.answer}], tokenize=False
    )
    if not full.startswith(prompt):
        raise TrainingDataError(
            f"line {pair.line}: this model's chat template renders the answer turn differently from the "
            "generation prompt, so the answer tokens cannot be found; use a model with a standard chat template."
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids
