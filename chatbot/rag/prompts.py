"""Engineered prompts: zero-shot, few-shot and chain-of-thought, with or without retrieved context.

The text lives in `chatbot/rag/templates/*.txt` and the few-shot examples in a JSON file
that can be swapped per knowledge base; this module only assembles them with
LangChain prompt templates. Retrieved passages go into the *user* turn, numbered
and fenced in <context> tags, while the rules stay alone in the system turn: a
page that says "ignore your instructions" is quoted data inside the fence.

Everything a page (or the person asking) contributes is *neutralised* before it
enters the prompt: every field of a passage (text, title, section), the question
and the history lose any <context> fence and any chat-template control token
(`<|im_end|>`, `[INST]`, `<s>`, ...), removed over and over until none is left, so
a page can neither close the fence nor open a new turn, and `</con</context>text>`
cannot reassemble one. A passage's heading is kept to one line and a line of its
text cannot start like a passage number ("[2] ..."), so a page cannot forge
another passage either. `chat_dicts` strips control tokens once more from every
message, with the model's own special tokens when its tokenizer is known: only the
chat template may add them. Trade-off: a page that documents such markers loses them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from chatbot.core.errors import parse_choice
from chatbot.core.text import heading_path

PROMPTS_DIR = Path(__file__).with_name("templates")
DEFAULT_EXAMPLES = PROMPTS_DIR / "few_shot.json"
# The prompt's own fence, in any spelling a model would read as it (case, spaces, attributes).
_FENCE = r"(?i:</?\s*context\b[^<>]*>)"
# Chat-template control text that a tokenizer (a server's, or transformers without sanitising) reads as the
# real token inside a message: ChatML, Llama 3, Phi and Granite's <|...|>, DeepSeek's (with fullwidth bars),
# Llama 2 and Mistral's BOS/EOS and [INST], Gemma's turns, Llama 2's <<SYS>>.
_CONTROL = (
    r"<\|[^\s<>|]{1,64}\|>|<\uff5c[^\s<>\uff5c]{1,64}\uff5c>"
    r"|</?(?:s|bos|eos|unk|pad|start_of_turn|end_of_turn)>"
    r"|\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS)\]|<</?SYS>>"
)
_UNSAFE = re.compile(f"{_FENCE}|{_CONTROL}")
_MAX_PASSES = 16
_MARKER_CHARACTERS = re.compile("[<>\\[\\]|\uff5c]")
_PASSAGE_NUMBER = re.compile(r"^([ \t]*)\[(\d+)\]", re.MULTILINE)  # how format_context starts a passage


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
    return parse_choice(Strategy, value, "prompt strategy")


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


def neutralise(text: str) -> str:
    """`text` with no <context> fence and no chat-template control token left, however they were nested."""
    return _remove_all(_UNSAFE, text)


def strip_control(text: str, special_tokens: Collection[str] = ()) -> str:
    """`text` with no chat-template control token left, nor any of `special_tokens` (a tokenizer's own)."""
    pattern = _control_pattern(frozenset(special_tokens))
    return _remove_all(pattern, text)


def special_tokens(tokenizer: Any) -> frozenset[str]:
    """The text of `tokenizer`'s special tokens: inside a message a tokenizer reads them as the tokens themselves."""
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens |= {token.content for token in added.values() if getattr(token, "special", False)}
    return frozenset(token for token in tokens if token.strip())


@cache
def _control_pattern(extra: frozenset[str]) -> re.Pattern[str]:
    literal = "|".join(re.escape(token) for token in sorted(extra, key=len, reverse=True))
    return re.compile(f"{literal}|{_CONTROL}" if literal else _CONTROL)


def _remove_all(pattern: re.Pattern[str], text: str) -> str:
    # Until nothing changes: one pass turns "</con</context>text>" into "</context>". Each level of
    # nesting costs a pass, so past what any real page holds (a hostile one), the characters every
    # marker is made of go instead: linear in the text, and nothing is left to reassemble.
    for _ in range(_MAX_PASSES):
        removed = pattern.sub("", text)
        if removed == text:
            return text
        text = removed
    return pattern.sub("", _MARKER_CHARACTERS.sub("", text))


def _one_line(text: str) -> str:
    # A title or section that spans lines could start a forged passage below its heading.
    return " ".join(neutralise(text).split())


def format_context(passages: Sequence[Passage]) -> str:
    """Numbered passages, [1] first, each headed by where it comes from; every field neutralised."""
    blocks = []
    for number, passage in enumerate(passages, 1):
        heading = heading_path(_one_line(passage.title), _one_line(passage.section))
        text = _PASSAGE_NUMBER.sub(r"\1(\2)", neutralise(passage.text)).strip()
        blocks.append(f"[{number}] {heading}\n{text}")
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
        history=[_neutralised(message) for message in history],
        context=format_context(passages),
        question=neutralise(question).strip(),
    )


def _neutralised(message: BaseMessage) -> BaseMessage:
    # Earlier turns are text the person (or the model, quoting a page) wrote: no fence or turn markers either.
    if not isinstance(message.content, str):
        return message
    return message.model_copy(update={"content": neutralise(message.content)})


def _example_messages(examples: Examples, strategy: Strategy, use_retrieval: bool) -> list[BaseMessage]:
    # CoT shows its reasoning format in the examples too, when the file has reasoning to show.
    messages: list[BaseMessage] = []
    for item in examples.items:
        passages = [Passage(p["title"], p.get("section", ""), p["text"]) for p in item["context"]]
        if use_retrieval:
            context = format_context(passages)
            human = _template("question.txt").format(context=context, question=neutralise(item["question"]))
            answer = item["answer"]
        else:
            human = _template("question_plain.txt").format(question=neutralise(item["question"]))
            answer = re.sub(r"\s*\[\d+\]", "", item["answer"])  # no passages, so no citations
        if strategy is Strategy.COT and item.get("reasoning"):
            answer = f"Reasoning: {item['reasoning']}\nAnswer: {answer}"
        messages += [HumanMessage(human), AIMessage(answer)]
    return messages


_ROLES = {"system": "system", "human": "user", "ai": "assistant"}  # message.type -> chat-template role


def chat_dicts(messages: Sequence[BaseMessage], *, special_tokens: Collection[str] = ()) -> list[dict[str, str]]:
    """LangChain messages as the role/content dicts chat templates and OpenAI-compatible servers take.

    Control tokens (and `special_tokens`, the model's own) are stripped from every content: only the
    chat template may put them in the prompt.
    """
    chat = []
    for message in messages:
        role = getattr(message, "role", None) if message.type == "chat" else _ROLES.get(message.type)
        if role is None:
            raise ValueError(
                f"A {type(message).__name__} cannot go into a chat template: use system, human or AI messages."
            )
        chat.append({"role": role, "content": strip_control(str(message.text), special_tokens)})
    return chat
