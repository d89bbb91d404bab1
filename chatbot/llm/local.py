"""Local runtimes as LangChain chat models that stream tokens as they are generated.

`LocalRuntime` is what the two local runtimes share: the model's own tokenizer renders
the prompt (chat template, control tokens kept as text) and turns generated token ids
back into text, and one loop streams them. A runtime generates in a background thread
and hands each token id to `emit`; the caller's thread turns the ids into text (the same
way for every runtime, so equal ids give equal text), cuts it at stop strings, stops the
thread when the consumer stops, and re-raises anything the thread raised.
`LocalChatModel` runs transformers (+ PEFT adapters); `chatbot.llm.ov_runtime` runs OpenVINO GenAI.

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
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field, model_validator

from chatbot.core.errors import AdapterNotFoundError, InvalidOptionError, RagtuneError
from chatbot.llm.base import CallOptions, ChatModel
from chatbot.rag.prompts import chat_dicts

if TYPE_CHECKING:
    from langchain_core.callbacks import CallbackManagerForLLMRun

    from chatbot.llm.loading import LocalModel

Emit = Callable[[int], bool]  # hands one generated token id to the caller; False: stop generating
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")
_DONE = object()  # what the generation thread puts last on its queue

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


class LocalRuntime(ChatModel):
    """A model run in this process, tokenized by its own tokenizer, streaming tokens from a background thread.

    Per call (invoke/stream kwargs or `.bind(...)`): `adapter` (None = base model), `max_new_tokens`,
    `temperature` (0 = greedy), `repetition_penalty`, and `stop` strings. Calls are serialised on
    a lock per model (see the module docstring); a stream holds it until it ends or is closed, so a
    thread must finish or close one stream before it starts another on the same model.
    A runtime says how it holds the model for a call (`_hold`) and how it generates (`_produce`).
    """

    tokenizer: Any = Field(exclude=True, repr=False)
    # adapter name -> {text: bias}: added to the logit of the text's first token at the first generated
    # position when that adapter answers (an adapter card's `first_token_bias`, see adapters/training/calibrate.py)
    first_token_bias: dict[str, dict[str, float]] = Field(default_factory=dict)

    @abstractmethod
    def _check_adapter(self, name: str | None) -> None:
        """Raise AdapterNotFoundError unless `name` is None or an adapter this model can switch to."""

    @abstractmethod
    def _hold(self, adapter: str | None) -> AbstractContextManager[None]:
        """Hold the model for one call under `adapter`: its lock, and the adapter switched on where that is state."""

    @abstractmethod
    def _produce(self, ids: list[int], options: CallOptions, end_ids: list[int], emit: Emit) -> None:
        """Generate after the prompt `ids`, handing each token to `emit` until it returns False (in a thread)."""

    @abstractmethod
    def _eos_ids(self) -> list[int]:
        """The end-of-sequence ids the model's generation config names."""

    def render(self, messages: Sequence[BaseMessage]) -> str:
        """The exact prompt text the model is given for `messages` (chat template + generation prompt)."""
        return self.tokenizer.apply_chat_template(chat_dicts(messages), add_generation_prompt=True, tokenize=False)

    def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        """How many tokens the prompt for `messages` takes, chat template included."""
        return len(self._prompt_ids(messages))

    def _prompt_ids(self, messages: Sequence[BaseMessage]) -> list[int]:
        return list(self._encode(messages)["input_ids"])

    def _encode(self, messages: Sequence[BaseMessage], **options: Any) -> Any:
        # A retrieved page that contains "<|im_end|>" must stay text, not end the turn.
        return self.tokenizer.apply_chat_template(
            chat_dicts(messages), add_generation_prompt=True, return_dict=True, sanitize_control_tokens=True, **options
        )

    def _bias_ids(self, adapter: str | None) -> dict[int, float]:
        """The first-token bias of `adapter` as token id -> bias (empty when it has none)."""
        bias = self.first_token_bias.get(adapter or "", {})
        return {self.get_token_ids(text)[0]: value for text, value in bias.items()}

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        options = self.call_options(kwargs)
        ids = self._checked_prompt(messages, options)
        end_ids = self._end_token_ids()
        tokens: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()

        def emit(token: int) -> bool:
            tokens.put(token)
            return not cancel.is_set()

        result: dict[str, Any] = {}
        worker = threading.Thread(
            target=_run, args=(self._produce, (ids, options, end_ids, emit), tokens, result), daemon=True
        )
        decoding = Decoding(self.tokenizer, stop)
        waited = time.perf_counter()
        with self._hold(options.adapter):
            started = time.perf_counter()
            worker.start()
            try:
                while (token := tokens.get()) is not _DONE:
                    if piece := decoding.feed(token):
                        yield _chunk(piece)
                    if decoding.hit_stop:
                        break
            finally:  # also when the consumer stops early: end generation before the lock is released
                cancel.set()
                worker.join()
        if "error" in result:
            raise result["error"]
        if rest := decoding.flush():
            yield _chunk(rest)
        yield self._last_chunk(decoding, ids, options, end_ids, started - waited, started)

    def _checked_prompt(self, messages: Sequence[BaseMessage], options: CallOptions) -> list[int]:
        """The prompt's token ids, once the adapter and the context window are known to allow the call."""
        self._check_adapter(options.adapter)
        ids = self._prompt_ids(messages)
        if len(ids) + options.max_new_tokens > self.context_window:
            raise RagtuneError(
                f"The prompt is {len(ids)} tokens and {options.max_new_tokens} more may be generated, "
                f"but {self.model_name} reads at most {self.context_window}: shorten the context or the history, "
                "or lower max_new_tokens."
            )
        return ids

    def _last_chunk(
        self, decoding: Decoding, ids: list[int], options: CallOptions, end_ids: list[int], wait: float, started: float
    ) -> ChatGenerationChunk:
        """The stream's last chunk: no text, the usage and the timings."""
        generated = decoding.generated
        ran_out = len(generated) >= options.max_new_tokens and generated[-1] not in end_ids
        usage = UsageMetadata(
            input_tokens=len(ids), output_tokens=len(generated), total_tokens=len(ids) + len(generated)
        )
        metadata = {
            "model_name": self.model_name,
            "adapter": options.adapter,
            "finish_reason": "length" if ran_out and not decoding.hit_stop else "stop",
            "wait_seconds": round(wait, 4),
            "seconds_to_first_token": None
            if decoding.first_piece is None
            else round(decoding.first_piece - started, 4),
            "total_seconds": round(time.perf_counter() - started, 4),
        }
        return ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=usage, response_metadata=metadata, chunk_position="last")
        )

    def _end_token_ids(self) -> list[int]:
        """The eos token(s) of the tokenizer and generation config, plus the chat format's end-of-turn marker."""
        ids = [self.tokenizer.eos_token_id, *self._eos_ids()]
        added = self.tokenizer.get_added_vocab()
        ids += [added[marker] for marker in _END_OF_TURN if marker in added]
        return list(dict.fromkeys(i for i in ids if i is not None))


class LocalChatModel(LocalRuntime):
    """A local transformers causal LM (or a PEFT model with adapters on it) as a LangChain chat model."""

    model: Any = Field(exclude=True, repr=False)  # a PreTrainedModel or a peft PeftModel

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

    def next_token_logprobs(self, messages: Sequence[BaseMessage], *, adapter: str | None = None) -> Any:
        """Log-probabilities (a vocabulary-sized tensor) of the first token generated after `messages`.

        The model's own, without `first_token_bias`: `adapters.training.calibrate` chooses the bias from them.
        """
        import torch

        logits = self._forward(adapter, **self._encode(messages, return_tensors="pt")).logits
        return torch.log_softmax(logits[0, -1], dim=-1)

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

    def _check_adapter(self, name: str | None) -> None:
        check_adapter(self.model, name)

    @contextmanager
    def _hold(self, adapter: str | None) -> Iterator[None]:
        with model_lock(self.model), use_adapter(self.model, adapter):
            yield

    def _eos_ids(self) -> list[int]:
        configured = self.model.generation_config.eos_token_id
        return configured if isinstance(configured, list) else [configured]

    def _produce(self, ids: list[int], options: CallOptions, end_ids: list[int], emit: Emit) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        streamer = _IdStreamer(emit)
        sampling = options.temperature > 0
        generate_kwargs = {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones((1, len(ids)), dtype=torch.long),
            "max_new_tokens": options.max_new_tokens,
            "do_sample": sampling,
            "temperature": options.temperature if sampling else None,
            "repetition_penalty": options.repetition_penalty,
            "eos_token_id": end_ids,
            "pad_token_id": end_ids[0] if self.tokenizer.pad_token_id is None else self.tokenizer.pad_token_id,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([streamer.stopped]),
        }
        if bias := self._bias_ids(options.adapter):
            generate_kwargs["logits_processor"] = LogitsProcessorList([_FirstTokenBias(len(ids), bias)])
        with torch.inference_mode():  # per thread: it must be entered here, not in the caller
            self.model.generate(**generate_kwargs)


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


def _run(produce: Callable[..., None], args: tuple, tokens: queue.Queue[Any], result: dict[str, Any]) -> None:
    try:
        produce(*args)
    except BaseException as error:  # handed to the caller's thread, which re-raises it
        result["error"] = error
    finally:
        tokens.put(_DONE)


class _Detokenizer:
    """Generated token ids to text, piece by piece: the whole answer decoded each time, the new end returned.

    Decoding all ids again (not each alone) keeps multi-token characters and the tokenizer's spacing rules
    exactly as one decode of the finished answer; an end that is half a character waits for the next token.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.ids, self.shown = tokenizer, [], ""

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(self.shown):
            return ""
        piece, self.shown = text[len(self.shown) :], text
        return piece


class Decoding:
    """Generated token ids to the pieces of text a stream shows: decoded, cut at the first stop string, timed."""

    def __init__(self, tokenizer: Any, stop: list[str] | None) -> None:
        self.text = _Detokenizer(tokenizer)
        self.stops = _StopStrings([s for s in stop or () if s])
        self.generated: list[int] = []
        self.hit_stop = False
        self.first_piece: float | None = None

    def feed(self, token: int) -> str:
        self.generated.append(token)
        piece, self.hit_stop = self.stops.feed(self.text.add(token))
        return self._shown(piece)

    def flush(self) -> str:
        """What was held back as the possible start of a stop string, once none came."""
        return "" if self.hit_stop else self._shown(self.stops.flush())

    def _shown(self, piece: str) -> str:
        if piece and self.first_piece is None:
            self.first_piece = time.perf_counter()
        return piece


def _chunk(text: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content=text))


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


class _IdStreamer:
    """A transformers streamer that hands each new token id to `emit`, and a stopping criterion for when it says stop.

    Plain callables rather than `BaseStreamer`/`StoppingCriteria` subclasses, so that defining them needs no torch
    import. Not `generate(stop_strings=...)`: transformers' StopStringCriteria matches the end of the whole
    sequence, prompt included, and sorts the whole vocabulary on every call (0.13 s per answer for SmolLM2).
    """

    def __init__(self, emit: Emit) -> None:
        self.emit, self.prompt_seen, self.stop = emit, False, False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() hands over the prompt first
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.stop = not self.emit(token) or self.stop

    def end(self) -> None:
        pass

    def stopped(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.stop, dtype=torch.bool, device=input_ids.device)
