"""Test doubles that are real implementations of the interfaces they stand in for."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator
from hashlib import blake2b
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from chatbot.core.errors import AdapterNotFoundError
from chatbot.llm.base import ChatModel


class FakeEmbeddings(Embeddings):
    """Deterministic bag-of-words vectors: texts sharing words point the same way. Records what it embedded."""

    def __init__(self, dim: int = 16, *, fail_on_call: int | None = None) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        for word in re.findall(r"\w+", text.lower()):
            vector[int.from_bytes(blake2b(word.encode(), digest_size=2).digest(), "big") % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt  # stands in for Ctrl-C (or a kill) between two batches
        return [self._vector(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)

    @property
    def embedded(self) -> list[str]:
        return [text for call in self.calls for text in call]


def count_words(text: str) -> int:
    """A token counter for tests: one token per word or punctuation mark."""
    return len(re.findall(r"\w+|[^\w\s]", text))


class WordTokenizer:
    """The two tokenizer calls the engine makes, one token per word."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split()

    def decode(self, ids: list[str]) -> str:
        return " ".join(ids)


class FakeChatModel(ChatModel):
    """A chat model that replies from a script, word by word, and records every call."""

    replies: list[str] = Field(default_factory=lambda: ["Refunds take 5 days [1]."])
    adapters: tuple[str, ...] = ()
    calls: list[dict[str, Any]] = Field(default_factory=list)
    context_window: int = 4096
    max_new_tokens: int = 64
    tokenizer: Any = Field(default_factory=WordTokenizer)

    @property
    def _llm_type(self) -> str:
        return "fake-chat"

    def adapter_names(self) -> list[str]:
        return list(self.adapters)

    def count_tokens(self, messages: list[BaseMessage]) -> int:
        return sum(len(str(message.content).split()) + 2 for message in messages)

    def render(self, messages: list[BaseMessage]) -> str:
        return "\n".join(f"<{message.type}>\n{message.content}" for message in messages)

    def _reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        adapter = kwargs.get("adapter")
        if adapter is not None and adapter not in self.adapters:
            raise AdapterNotFoundError(f"No adapter named {adapter!r} is loaded.")
        self.calls.append({"messages": messages, **kwargs})
        return self.replies[(len(self.calls) - 1) % len(self.replies)]

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        reply = self._reply(messages, {"stop": stop, **kwargs})
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs) -> Iterator[ChatGenerationChunk]:
        words = self._reply(messages, {"stop": stop, **kwargs}).split(" ")
        for index, word in enumerate(words):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word if index == 0 else " " + word))


def count_words_or_misbehave(text: str) -> int:
    """`count_words`, except on a marker word: HANG sleeps, HOG allocates 3 GB, DIE exits, BOOM raises.

    Module level so that it pickles: ingestion calls it in its child process, where these stand for a parser
    that hangs, eats memory, crashes or fails in a way nobody planned for.
    """
    if "HANG" in text:
        time.sleep(3600)
    if "HOG" in text:
        return len(bytearray(3 * 1024**3))
    if "DIE" in text:
        os._exit(3)
    if "BOOM" in text:
        raise ValueError("an unplanned failure")
    return count_words(text)
