"""Engineered prompts: zero-shot, few-shot and chain-of-thought, with or without retrieved context.

The text lives in `chatbot/rag/templates/*.txt` and the few-shot examples in a JSON file
that can be swapped per knowledge base; this module only assembles them with
LangChain prompt templates. Retrieved passages go into the *user* turn, numbered
and fenced in <context> tags, while the rules stay alone in the system turn: a
page that says "ignore your instructions" is quoted data inside the fence, and
cannot close the fence early because the tags are neutralised in passage text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from chatbot.core.errors import InvalidOptionError
from chatbot.core.text import heading_path

PROMPTS_DIR = Path(__file__).with_name("templates")
DEFAULT_EXAMPLES = PROMPTS_DIR / "few_shot.json"
_FENCE = re.compile(r"</?\s*context\s*>", re.IGNORECASE)


class Strategy(StrEnum):
    """How the model is prompted."""

    ZERO_SHOT = "zero-shot"
    FEW_SHOT = "few-shot"
    COT = "cot"

    @property
    def label(self) -> str:
        """How the page names it."""
        return {"zero-shot": "Zero-shot", "few-shot": "Few-shot", "cot": "Chain of thought"}[self.value]


def parse_strategy(value: str | Strategy) -> Strategy:
    """A strategy from its name; a clear error for anything else."""
    try:
        return Strategy(value)
    except ValueError:
        choices = ", ".join(s.value for s in Strategy)
        raise InvalidOptionError(f"Unknown prompt strategy {value!r}: choose one of {choices}.") from None


@dataclass(frozen=True)
class Passage:
    """What the prompt needs of a retrieved chunk."""

    title: str
    section: str
    text: str


@dataclass(frozen=True)
class Examples:
    """The product's name and its worked examples, read from a few-shot JSON file."""

    product: str
    items: tuple[dict[str, Any], ...]

    @classmethod
    def load(cls, path: Path = DEFAULT_EXAMPLES, *, product: str | None = None) -> Examples:
        """Read `{"product": ..., "examples": [{"question", "context", "reasoning", "answer"}]}`.

        `product` (the `RAG_PRODUCT` setting) names another product in the prompts than the file's.
        """
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(product=product or data["product"], items=tuple(data["examples"]))


@cache
def _template(name: str) -> str:
    return (PROMPTS_DIR / name).read_text(encoding="utf-8").strip()


def format_context(passages: Sequence[Passage]) -> str:
    """Numbered passages, [1] first, each headed by where it comes from."""
    blocks = []
    for number, passage in enumerate(passages, 1):
        blocks.append(
            f"[{number}] {heading_path(passage.title, passage.section)}\n{_FENCE.sub('', passage.text).strip()}"
        )
    return "\n\n".join(blocks)


def build_messages(
    question: str,
    passages: Sequence[Passage],
    *,
    strategy: Strategy,
    examples: Examples,
    history: Sequence[BaseMessage] = (),
    use_retrieval: bool = True,
) -> list[BaseMessage]:
    """The full conversation sent to the model: rules, examples, history, then this question."""
    system = _template("rag_system.txt" if use_retrieval else "plain_system.txt")
    if strategy is Strategy.COT:
        system += "\n\n" + _template("cot.txt")
    question_template = _template("question.txt" if use_retrieval else "question_plain.txt")
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", system),
            MessagesPlaceholder("examples"),
            MessagesPlaceholder("history"),
            ("human", question_template),
        ]
    )
    shots = _example_messages(examples, strategy, use_retrieval) if strategy is not Strategy.ZERO_SHOT else []
    return prompt.format_messages(
        product=examples.product,
        examples=shots,
        history=list(history),
        context=format_context(passages),
        question=question.strip(),
    )


def _example_messages(examples: Examples, strategy: Strategy, use_retrieval: bool) -> list[BaseMessage]:
    # CoT shows its reasoning format in the examples too, when the file has reasoning to show.
    messages: list[BaseMessage] = []
    for item in examples.items:
        passages = [Passage(p["title"], p.get("section", ""), p["text"]) for p in item["context"]]
        if use_retrieval:
            human = _template("question.txt").format(context=format_context(passages), question=item["question"])
            answer = item["answer"]
        else:
            human = _template("question_plain.txt").format(question=item["question"])
            answer = re.sub(r"\s*\[\d+\]", "", item["answer"])  # no passages, so no citations
        if strategy is Strategy.COT and item.get("reasoning"):
            answer = f"Reasoning: {item['reasoning']}\nAnswer: {answer}"
        messages += [HumanMessage(human), AIMessage(answer)]
    return messages


_ROLES = {"system": "system", "human": "user", "ai": "assistant"}  # message.type -> chat-template role


def chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the role/content dicts chat templates and OpenAI-compatible servers take."""
    chat = []
    for message in messages:
        role = getattr(message, "role", None) if message.type == "chat" else _ROLES.get(message.type)
        if role is None:
            raise ValueError(
                f"A {type(message).__name__} cannot go into a chat template: use system, human or AI messages."
            )
        chat.append({"role": role, "content": str(message.text)})
    return chat
