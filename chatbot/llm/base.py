"""One chat-model interface: what the engine asks of every runtime, local, served or a test's fake.

LangChain's `BaseChatModel` gives `invoke`/`stream` and callbacks; this class adds what the
engine needs beside them (render the prompt, count its tokens, the context window, a tokenizer
to cut a passage on a token boundary, the adapters it can switch to, what identifies its
weights) and checks the per-call options every runtime shares. A runtime only says how it
generates (`_stream`) and what it can measure (`answer_loss`, where it has the logits).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.language_models.chat_models import BaseChatModel, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import ConfigDict, Field

from chatbot.core.errors import InvalidOptionError, RagtuneError

if TYPE_CHECKING:
    from langchain_core.callbacks import CallbackManagerForLLMRun

OPTIONS = ("adapter", "max_new_tokens", "repetition_penalty", "temperature")
_IGNORED = ("stream",)  # LangChain may pass it through; streaming is chosen by which method is called


@dataclass(frozen=True)
class CallOptions:
    """The options of one call, each given or the model's default, checked."""

    adapter: str | None
    max_new_tokens: int
    temperature: float
    repetition_penalty: float


class ChatModel(BaseChatModel):
    """A chat model the engine can answer with; per call: `adapter` (None = base model), `max_new_tokens`,
    `temperature` (0 = greedy), `repetition_penalty` (1 = off) and `stop` strings."""

    model_name: str = "local"
    tokenizer: Any = Field(default=None, exclude=True, repr=False)  # `encode`/`decode`, to cut a passage
    context_window: int | None = Field(default=None, ge=1)
    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    token_count: str | None = None  # "estimate" where the prompt's tokens are estimated, not counted

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @abstractmethod
    def render(self, messages: Sequence[BaseMessage]) -> str:
        """The prompt as the model reads it (chat template and generation prompt included)."""

    @abstractmethod
    def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        """How many tokens the prompt for `messages` takes."""

    def adapter_names(self) -> list[str]:
        """The adapters this model can switch to per call."""
        return []

    def identity(self) -> dict[str, Any]:
        """What tells these weights from others of the same name (the evaluation cache keys answers by it)."""
        return {}

    def answer_loss(self, messages: list[dict[str, str]], answer: str, *, adapter: str | None = None) -> float:
        """Mean negative log-likelihood of `answer`'s tokens after `messages`, where the runtime has the logits."""
        raise RagtuneError(
            f"Cannot probe {adapter or self.model_name!r}: {type(self).__name__} returns text, not the answer "
            "loss a probe measures. Probe the adapter on a local model instead."
        )

    def stream_many(
        self, batch: Sequence[Sequence[BaseMessage]], stop: list[str] | None = None, **kwargs: Any
    ) -> list[list[AIMessageChunk]]:
        """What `stream` yields for each prompt of `batch`, all with the same options (the evaluation's cells).

        One after another here; a runtime that generates several prompts at once overrides it.
        """
        return [list(self.stream(list(messages), stop=stop, **kwargs)) for messages in batch]

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence | None = None) -> int:
        """LangChain's name for `count_tokens` (tools are not supported)."""
        return self.count_tokens(messages)

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of plain text in the model's own tokenizer (LangChain's default would fetch GPT-2's)."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def call_options(self, kwargs: dict[str, Any]) -> CallOptions:
        """The options of one call: unknown names and values out of range are a clear error."""
        unknown = sorted(set(kwargs) - {*OPTIONS, *_IGNORED})
        if unknown:
            raise InvalidOptionError(
                f"Unknown option {', '.join(map(repr, unknown))} for {type(self).__name__}: "
                f"use {', '.join(OPTIONS)} or stop."
            )
        options = CallOptions(
            adapter=kwargs.get("adapter"),
            max_new_tokens=kwargs.get("max_new_tokens", self.max_new_tokens),
            temperature=kwargs.get("temperature", self.temperature),
            repetition_penalty=kwargs.get("repetition_penalty", self.repetition_penalty),
        )
        checks = [
            ("max_new_tokens", options.max_new_tokens, int, 1, "a whole number >= 1"),
            ("temperature", options.temperature, (int, float), 0, "0 (greedy) or more"),
            ("repetition_penalty", options.repetition_penalty, (int, float), 1e-6, "more than 0 (1 = off)"),
        ]
        for name, value, kinds, low, allowed in checks:
            if isinstance(value, bool) or not isinstance(value, kinds) or value < low:
                raise InvalidOptionError(f"{name}={value!r} is not allowed: use {allowed}.")
        return options

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))
