"""The local generator as a LangChain chat model that streams tokens as they are generated.

`generate()` runs in a background thread and feeds a `TextIteratorStreamer`; the caller's
thread turns its pieces into LangChain chunks, cuts the text at stop strings, and re-raises
anything the thread raised.

Trade-off: one lock per set of weights serialises generation. A PEFT model's active adapter
is global state on its layers (`set_adapter` and `disable_adapter` change the modules), so two
interleaved calls with different adapters would each run under the other's switch. Holding the
lock for the whole call (adapter switch + generate) makes every answer exactly what it would be
alone; concurrent users wait their turn, which on a CPU they mostly would anyway (two generations
in parallel share the same cores).

torch and transformers are imported inside the methods that run the model: the engine imports
this module, and importing the engine must not import torch.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field, model_validator

from chatbot.core.errors import AdapterNotFoundError, InvalidOptionError, RagtuneError
from chatbot.llm.base import ChatModel
from chatbot.rag.prompts import chat_dicts

if TYPE_CHECKING:
    from langchain_core.callbacks import CallbackManagerForLLMRun

    from chatbot.llm.loading import LocalModel

# End-of-turn markers of common chat formats; generation stops at whichever the tokenizer has.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")
_POLL_SECONDS = 0.1

_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: Any) -> threading.Lock:
    """The lock every chat model over these weights shares (a PeftModel shares its base model's)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with _locks_guard:
        return _locks.setdefault(base, threading.Lock())


def check_adapter(model: Any, name: str | None) -> None:
    """Raise AdapterNotFoundError unless `name` is None or an adapter loaded on `model`."""
    if name is None:
        return
    loaded = sorted(model.peft_config) if hasattr(model, "disable_adapter") else []
    if name not in loaded:
        raise AdapterNotFoundError(
            f"No adapter named {name!r} is loaded; available: {', '.join(map(repr, loaded)) or 'none'}. "
            "Load the adapter first, or pick no adapter to use the base model."
        )


@contextmanager
def use_adapter(model: Any, name: str | None) -> Iterator[None]:
    """Run the body with adapter `name` active, or with adapters off for None; restore the previous state after."""
    if name is None:
        if hasattr(model, "disable_adapter"):  # a PeftModel
            try:
                with model.disable_adapter():
                    yield
            finally:
                # peft turns adapters back on as trainable; served weights must stay frozen
                for parameter in model.parameters():
                    parameter.requires_grad_(False)
        else:
            yield
        return
    check_adapter(model, name)
    previous = model.active_adapter
    # inference_mode: activating an adapter must not make its weights trainable
    model.set_adapter(name, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter(previous, inference_mode=True)


class LocalChatModel(ChatModel):
    """A local transformers causal LM as a LangChain chat model, streaming tokens as they are generated.

    Per call (invoke/stream kwargs or `.bind(...)`): `adapter` (None = base model), `max_new_tokens`,
    `temperature` (0 = greedy), `repetition_penalty`, and `stop` strings. Calls are serialised on
    a lock per model (see the module docstring); a stream holds it until it ends or is closed, so a
    thread must finish or close one stream before it starts another on the same model.
    """

    model: Any = Field(exclude=True, repr=False)  # a PreTrainedModel or a peft PeftModel
    tokenizer: Any = Field(exclude=True, repr=False)
    # adapter name -> {text: bias}: added to the logit of the text's first token at the first generated
    # position when that adapter answers (an adapter card's `first_token_bias`, see adapters/training/calibrate.py)
    first_token_bias: dict[str, dict[str, float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _window_from_config(self) -> LocalChatModel:
        if self.context_window is None:
            window = getattr(self.model.config, "max_position_embeddings", None)
            if not window:
                raise InvalidOptionError(
                    f"{self.model_name} has no max_position_embeddings in its config: pass context_window=N."
                )
            self.context_window = int(window)
        return self

    @property
    def _llm_type(self) -> str:
        return "ragtune-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "repetition_penalty": self.repetition_penalty,
            "context_window": self.context_window,
        }

    def adapter_names(self) -> list[str]:
        """The adapters loaded on the model (a PeftModel's), each switchable per call."""
        return list(getattr(self.model, "peft_config", {}))

    def identity(self) -> dict[str, Any]:
        """The weights' folder and a hash of its files."""
        from chatbot.llm.loading import weights_identity

        return weights_identity(self.model)

    def render(self, messages: Sequence[BaseMessage]) -> str:
        """The exact prompt text the model is given for `messages` (chat template + generation prompt)."""
        return self.tokenizer.apply_chat_template(chat_dicts(messages), add_generation_prompt=True, tokenize=False)

    def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        """How many tokens the prompt for `messages` takes, chat template included."""
        return len(self._encode(messages)["input_ids"])

    def next_token_logprobs(self, messages: Sequence[BaseMessage], *, adapter: str | None = None) -> Any:
        """Log-probabilities (a vocabulary-sized tensor) of the first token generated after `messages`.

        The model's own, without `first_token_bias`: `adapters.training.calibrate` chooses the bias from them.
        """
        import torch

        logits = self._forward(adapter, **self._encode(messages, return_tensors="pt")).logits
        return torch.log_softmax(logits[0, -1], dim=-1)

    def _encode(self, messages: Sequence[BaseMessage], **options: Any) -> Any:
        # A retrieved page that contains "<|im_end|>" must stay text, not end the turn.
        return self.tokenizer.apply_chat_template(
            chat_dicts(messages), add_generation_prompt=True, return_dict=True, sanitize_control_tokens=True, **options
        )

    def answer_loss(self, messages: list[dict[str, str]], answer: str, *, adapter: str | None = None) -> float:
        """Mean negative log-likelihood of `answer`'s tokens after `messages` (lower: the model expects it more)."""
        import torch

        from adapters.pairs import Pair, encode

        ids, labels = encode(Pair(messages, answer, line=0), self.tokenizer)
        return float(self._forward(adapter, input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss)

    def _forward(self, adapter: str | None, **inputs: Any) -> Any:
        """One forward pass without gradients under `adapter` (None: the base model), holding the model's lock."""
        import torch

        check_adapter(self.model, adapter)
        with model_lock(self.model), use_adapter(self.model, adapter), torch.no_grad():
            return self.model(**inputs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        from transformers import LogitsProcessorList, StoppingCriteriaList, TextIteratorStreamer  # imports torch

        options = self.call_options(kwargs)
        check_adapter(self.model, options.adapter)
        inputs = self._encode(messages, return_tensors="pt")
        prompt_tokens = inputs["input_ids"].shape[1]
        if prompt_tokens + options.max_new_tokens > self.context_window:
            raise RagtuneError(
                f"The prompt is {prompt_tokens} tokens and {options.max_new_tokens} more may be generated, "
                f"but {self.model_name} reads at most {self.context_window}: shorten the context or the history, "
                "or lower max_new_tokens."
            )
        stops = _StopStrings([s for s in stop or () if s])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        end_ids = self._end_token_ids()
        sampling = options.temperature > 0
        generate_kwargs = {
            **inputs,
            "max_new_tokens": options.max_new_tokens,
            "do_sample": sampling,
            "temperature": options.temperature if sampling else None,
            "repetition_penalty": options.repetition_penalty,
            "eos_token_id": end_ids,
            "pad_token_id": end_ids[0] if self.tokenizer.pad_token_id is None else self.tokenizer.pad_token_id,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_StopCheck(self.tokenizer, prompt_tokens, stops.stops, cancel)]),
        }
        if bias := self.first_token_bias.get(options.adapter or ""):
            ids = {self.get_token_ids(text)[0]: value for text, value in bias.items()}
            generate_kwargs["logits_processor"] = LogitsProcessorList([_FirstTokenBias(prompt_tokens, ids)])
        result: dict[str, Any] = {}
        worker = threading.Thread(target=_run, args=(self.model, generate_kwargs, result), daemon=True)

        waited = time.perf_counter()
        first_piece = hit_stop = None
        with model_lock(self.model), use_adapter(self.model, options.adapter):
            started = time.perf_counter()
            worker.start()
            try:
                for piece in _pieces(streamer, worker):
                    text, hit_stop = stops.feed(piece)
                    if text:
                        first_piece = first_piece or time.perf_counter()
                        yield ChatGenerationChunk(message=AIMessageChunk(content=text))
                    if hit_stop:
                        break
            finally:  # also when the consumer stops early: end generation before the lock is released
                cancel.set()
                worker.join()
        if "error" in result:
            raise result["error"]
        if not hit_stop and (rest := stops.flush()):
            first_piece = first_piece or time.perf_counter()
            yield ChatGenerationChunk(message=AIMessageChunk(content=rest))

        finished = time.perf_counter()
        generated = result["output"][0, prompt_tokens:].tolist()
        ran_out = len(generated) >= options.max_new_tokens and generated[-1] not in end_ids
        usage = UsageMetadata(
            input_tokens=prompt_tokens, output_tokens=len(generated), total_tokens=prompt_tokens + len(generated)
        )
        metadata = {
            "model_name": self.model_name,
            "adapter": options.adapter,
            "finish_reason": "length" if ran_out and not hit_stop else "stop",
            "wait_seconds": round(started - waited, 4),
            "seconds_to_first_token": None if first_piece is None else round(first_piece - started, 4),
            "total_seconds": round(finished - started, 4),
        }
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=usage, response_metadata=metadata, chunk_position="last")
        )

    def _end_token_ids(self) -> list[int]:
        """The eos token(s) of the tokenizer and generation config, plus the chat format's end-of-turn marker."""
        configured = self.model.generation_config.eos_token_id
        ids = [self.tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])]
        added = self.tokenizer.get_added_vocab()
        ids += [added[marker] for marker in _END_OF_TURN if marker in added]
        return list(dict.fromkeys(i for i in ids if i is not None))


def build_chat_model(
    local: LocalModel,
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    first_token_bias: dict[str, dict[str, float]] | None = None,
) -> LocalChatModel:
    """The loaded generator as a chat model, greedy by default."""
    return LocalChatModel(
        model=local.model,
        tokenizer=local.tokenizer,
        model_name=local.name,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        first_token_bias=first_token_bias or {},
    )


def _run(model: Any, generate_kwargs: dict[str, Any], result: dict[str, Any]) -> None:
    import torch

    try:
        with torch.inference_mode():  # per thread: it must be entered here, not in the caller
            result["output"] = model.generate(**generate_kwargs)
    except BaseException as error:  # handed to the caller's thread, which re-raises it
        result["error"] = error


def _pieces(streamer: Any, worker: threading.Thread) -> Iterator[str]:
    """Text as the streamer receives it, until generation ends or its thread dies without ending the stream."""
    while True:
        try:
            piece = streamer.text_queue.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if worker.is_alive() or not streamer.text_queue.empty():
                continue
            return
        if piece is streamer.stop_signal:
            return
        yield piece


class _StopStrings:
    """Cuts streamed text at the first stop string, holding back any ending that could begin one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """The text that is safe to show now, and whether a stop string was reached."""
        self.pending += piece
        found = [at for stop in self.stops if (at := self.pending.find(stop)) >= 0]
        if found:
            return self.pending[: min(found)], True
        keep = max(
            (k for stop in self.stops for k in range(1, len(stop)) if self.pending.endswith(stop[:k])), default=0
        )
        cut = len(self.pending) - keep
        text, self.pending = self.pending[:cut], self.pending[cut:]
        return text, False

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text


class _FirstTokenBias:
    """A transformers logits processor: add `bias[token]` to those tokens' scores at the first generated position."""

    def __init__(self, prompt_tokens: int, bias: dict[int, float]) -> None:
        self.prompt_tokens, self.bias = prompt_tokens, bias

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if input_ids.shape[1] == self.prompt_tokens:
            scores = scores.clone()
            for token, value in self.bias.items():
                scores[:, token] += value
        return scores


class _StopCheck:
    """A transformers stopping criterion: stop when the caller has gone or the new text holds a stop string.

    A plain callable rather than a `StoppingCriteria` subclass, so that defining it needs no torch import.
    Not `generate(stop_strings=...)`: transformers' StopStringCriteria matches the end of the whole sequence,
    prompt included (an answer that starts with "Question:" after the prompt's final newline would stop at
    once), and it sorts and hashes the whole vocabulary on every call to find its cached tables (0.13 s per
    answer for SmolLM2's 49k tokens, measured on 2 cores).
    """

    def __init__(self, tokenizer: Any, prompt_tokens: int, stops: list[str], cancel: threading.Event) -> None:
        self.tokenizer, self.prompt_tokens, self.stops, self.cancel = tokenizer, prompt_tokens, stops, cancel

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = self.cancel.is_set()
        if not done and self.stops:
            text = self.tokenizer.decode(input_ids[0, self.prompt_tokens :], skip_special_tokens=True)
            done = any(stop in text for stop in self.stops)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
