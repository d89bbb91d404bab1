"""Counting a served model's tokens here, so the engine can trim the prompt before it sends it.

The server holds the real tokenizer; the engine needs counts before the request. So the
served model's own tokenizer is used when a copy is at hand (`RAG_LLM_TOKENIZER`, the
bundled SmolLM2's when the server runs a SmolLM2, or the served name itself when it is a
folder or a model in the local Hugging Face cache), and otherwise an estimate of one
token per 3 characters. English runs ~4 characters a token in Llama-style tokenizers, so
the estimate over-counts and the prompt stays inside the window at the price of a little
context; text that tokenises densely (code, CJK) can still be under-counted, so a
`RAG_LLM_TOKENIZER` is the fix for those. Which one counted is reported as
`token_count` ("tokenizer" or "estimate") on every answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage

from chatbot.core.config import Settings
from chatbot.core.errors import ModelNotFoundError
from chatbot.rag.prompts import chat_dicts, special_tokens

CHARS_PER_TOKEN = 3
MESSAGE_OVERHEAD = 4  # role markers and separators a chat template adds around each message


class EstimateTokenizer:
    """A stand-in tokenizer: one "token" per 3 characters, so encode/decode cut text where the estimate counts."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
        """The text in 3-character pieces."""
        return [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]

    def decode(self, ids: Sequence[str]) -> str:
        """The pieces joined back."""
        return "".join(ids)


def count_tokens(tokenizer: Any, messages: Sequence[BaseMessage]) -> int:
    """Tokens the prompt takes: the chat template's count with a real tokenizer, else the estimate."""
    if getattr(tokenizer, "chat_template", None):
        chat = chat_dicts(messages, special_tokens=special_tokens(tokenizer))  # as RemoteChatModel sends them
        encoded = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)
        return len(encoded["input_ids"])
    pieces = sum(len(tokenizer.encode(str(m.text), add_special_tokens=False)) for m in messages)
    return pieces + MESSAGE_OVERHEAD * (len(messages) + 1)  # +1: the assistant turn the server opens


def render(tokenizer: Any, messages: Sequence[BaseMessage]) -> str:
    """The prompt as text: the local copy of the chat template, else the messages role by role."""
    if getattr(tokenizer, "chat_template", None):
        chat = chat_dicts(messages, special_tokens=special_tokens(tokenizer))
        return tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return "".join(f"<|{item['role']}|>\n{item['content']}\n" for item in chat_dicts(messages)) + "<|assistant|>\n"


def load_tokenizer(settings: Settings, served_name: str) -> tuple[Any, str]:
    """The served model's tokenizer and "tokenizer", or an `EstimateTokenizer` and "estimate"."""
    if settings.llm_tokenizer:
        from chatbot.llm.loading import local_model_dir

        return _load(local_model_dir(settings.llm_tokenizer, "RAG_LLM_TOKENIZER"), "RAG_LLM_TOKENIZER"), "tokenizer"
    folder = _local_copy(settings, served_name)
    if folder is not None:
        try:
            return _load(folder, "RAG_LLM_TOKENIZER"), "tokenizer"
        except ModelNotFoundError:  # a copy found, not asked for, that does not load: as if there were none
            pass
    return EstimateTokenizer(), "estimate"


def _local_copy(settings: Settings, served_name: str) -> Path | None:
    from chatbot.llm.loading import ensure_generator_cache, local_model_dir

    # Every SmolLM2 size and variant shares one tokenizer, so the bundled copy counts for any of them
    # ("HuggingFaceTB/SmolLM2-1.7B-Instruct" on vLLM, "smollm2:135m" on Ollama).
    try:
        if "smollm2" in served_name.lower():
            return ensure_generator_cache(settings)[0]
        folder = local_model_dir(served_name, "RAG_LLM_MODEL")
    except (ModelNotFoundError, ValueError):  # no bundled package, or no folder, cached model or hub id here
        return None
    return folder if (folder / "tokenizer_config.json").is_file() else None


def _load(folder: Path, setting: str) -> Any:
    from transformers import AutoTokenizer  # the tokenizer alone; no model weights are read

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(
            f"{setting}={folder} holds no tokenizer transformers can load ({error}): point it at a folder with "
            "tokenizer.json and tokenizer_config.json, or unset it to count tokens by estimate."
        ) from error
