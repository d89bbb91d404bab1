"""The local generator on OpenVINO GenAI: 3-5x the transformers runtime's speed on a CPU, adapters per call.

The model is the generator's folder exported once (`chatbot.llm.ov_export`). Each fitting LoRA
adapter gets its own `LLMPipeline` with the adapter compiled in at load, and the base model one
more: a call picks its pipeline, so switching adapters costs nothing, and decoding runs near the
base model's speed (an adapter switchable per call cost ~35% of it). As a pipeline's weights never
change, each keeps a prefix cache (the system prompt every question shares is computed once) and
decodes by prompt lookup: it proposes the tokens that followed the last few generated ones in the
prompt and checks them in one pass, which pays off in answers quoting retrieved passages, with the
tokens greedy decoding picks. OpenVINO does not read `adapter_config.json`, so the scale PEFT
applies, `lora_alpha / r` (`/ sqrt(r)` with rsLoRA), is passed as the adapter's alpha. Inference
runs in f32 (OpenVINO would pick bf16 where the CPU has it), so f32 weights give the transformers
runtime's greedy text.

The prompt is tokenized by the model's own Hugging Face tokenizer and the generated ids decoded by
it (`LocalRuntime`), so both runtimes read and write the same tokens.

An adapter card's `first_token_bias` (which lowers the refusal's first token) has no logits processor
here. It can only change the greedy first token when that token is a biased one: generation runs as
usual, and only when its first token is biased does it stop there. Since the biases only lower, the
biased argmax is then among the k+1 likeliest tokens (k biased ones): a one-token beam search of k+1
beams gives exactly those with their log-probabilities. Beam search does not combine with prompt
lookup, so it runs on one more pipeline, made on first need, with the biased adapters applied per
call and no prefix cache (whose keys would not tell the adapters apart). The first token is chosen
from them, and generation goes on after it on the adapter's own pipeline.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import openvino as ov
import openvino_genai as genai
from langchain_core.messages import AIMessageChunk
from pydantic import Field, PrivateAttr

from adapters.registry import CONFIG_FILE, WEIGHTS_FILE, Adapter
from chatbot.core.config import Settings
from chatbot.core.errors import AdapterNotFoundError, InvalidOptionError, LoadError, RagtuneError, first_line
from chatbot.core.files import files_fingerprint
from chatbot.llm.base import CallOptions
from chatbot.llm.loading import WEIGHT_SUFFIXES, generator_source
from chatbot.llm.local import Decoding, Emit, LocalChatModel, LocalRuntime
from chatbot.llm.ov_export import ensure_export

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

PROPERTIES = {"INFERENCE_PRECISION_HINT": "f32"}
# Prompt lookup: up to 8 proposed tokens per step, found after the last 3 generated ones (chosen on the first
# 12 sample questions: 5 -> 8 -> 12 gave 1.39 / 1.33 / 1.26 s per answer; bench/bench_runtime.py reports the rest).
LOOKUP = {"num_assistant_tokens": 8, "max_ngram_size": 3}


def _scheduler(prefix_cache: bool) -> Any:
    # The prefix cache keys cached attention by the prompt's tokens alone: only a pipeline whose weights never
    # change may keep one (with adapters switched per call, the base model's keys reached the adapter's prompt).
    config = genai.SchedulerConfig()
    config.enable_prefix_caching = prefix_cache
    return config


@dataclass(frozen=True)
class LoraAdapter:
    """An adapter as OpenVINO applies it: its weights and the scale PEFT gives them."""

    adapter: Any  # openvino_genai.Adapter
    alpha: float


def lora_scale(config: dict[str, Any]) -> float:
    """The scale PEFT applies to a LoRA's update: lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA."""
    rank = config["r"]
    return config["lora_alpha"] / (math.sqrt(rank) if config.get("use_rslora") else rank)


def openvino_problem(adapter: Adapter, bias: dict[str, float]) -> str | None:
    """Why OpenVINO cannot apply `adapter` as PEFT does, or None when it can."""
    try:
        config = json.loads((adapter.path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as error:
        return f"adapter {adapter.name!r}: {CONFIG_FILE} is unreadable ({first_line(error)})"
    reasons = []
    if config.get("peft_type", "LORA") != "LORA":
        reasons.append(f"it is a {config.get('peft_type')} adapter, not LoRA")
    if config.get("use_dora"):
        reasons.append("it uses DoRA")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        reasons.append("its layers have different ranks or alphas (one scale per adapter here)")
    if config.get("modules_to_save"):
        reasons.append("it also saves whole modules (modules_to_save)")
    if any(value > 0 for value in bias.values()):
        reasons.append("its card's first_token_bias raises a token (only lowering biases are applied here)")
    if not reasons:
        return None
    return (
        f"adapter {adapter.name!r} cannot run on OpenVINO: {'; '.join(reasons)}. "
        "Set RAG_LLM_RUNTIME=transformers to use it."
    )


class OpenVinoChatModel(LocalRuntime):
    """An exported causal LM on OpenVINO GenAI: one `LLMPipeline` per adapter (and the base model), picked per call."""

    # adapter name (None: the base model) -> its LLMPipeline, adapter compiled in, prefix cache and prompt lookup on
    pipelines: dict[str | None, Any] = Field(exclude=True, repr=False)
    loras: dict[str, LoraAdapter] = Field(default_factory=dict, exclude=True, repr=False)
    folder: Path  # the exported model, for the beam-search pipeline made on first need
    eos_ids: list[int] = Field(default_factory=list)
    weights: dict[str, Any] = Field(default_factory=dict)  # what identifies the weights (eval cache key)
    # builds the same model on the transformers runtime, for what needs the logits (the probe)
    scorer: Callable[[], LocalChatModel] | None = Field(default=None, exclude=True, repr=False)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _scoring: LocalChatModel | None = PrivateAttr(default=None)
    _beams: Any = PrivateAttr(default=None)  # openvino_genai.LLMPipeline, see `_beam_pipeline`

    @property
    def _llm_type(self) -> str:
        return "ragtune-openvino"

    def adapter_names(self) -> list[str]:
        """The adapters loaded, each with its own pipeline."""
        return [name for name in self.pipelines if name is not None]

    def identity(self) -> dict[str, Any]:
        """The source folder's files, the runtime and the weights' precision."""
        return self.weights

    def answer_loss(self, messages: list[dict[str, str]], answer: str, *, adapter: str | None = None) -> float:
        """The answer's loss, measured on the transformers runtime (GenAI returns no logits)."""
        return self._scorer().answer_loss(messages, answer, adapter=adapter)

    def _scorer(self) -> LocalChatModel:
        if self.scorer is None:
            raise RagtuneError(
                f"{self.model_name} on OpenVINO returns text, not logits, and has no transformers runtime to measure "
                "with: build it with build_engine, or set RAG_LLM_RUNTIME=transformers."
            )
        with self._lock:
            if self._scoring is None:
                self._scoring = self.scorer()  # loads torch and the weights once, on first use
            return self._scoring

    def _check_adapter(self, name: str | None) -> None:
        if name not in self.pipelines:
            names = self.adapter_names()
            raise AdapterNotFoundError(
                f"No adapter named {name!r} is loaded; available: {', '.join(map(repr, names)) or 'none'}. "
                "Load the adapter first, or pick no adapter to use the base model."
            )

    @contextmanager
    def _hold(self, adapter: str | None) -> Iterator[None]:
        with self._lock:  # one generation at a time on one pipeline; the adapter is per call, not state
            yield

    def _eos_ids(self) -> list[int]:
        return self.eos_ids

    def _config(self, options: CallOptions, end_ids: list[int], **overrides: Any) -> Any:
        """The call's generation settings on its adapter's pipeline (prompt lookup on)."""
        return _generation_config(options, end_ids, **LOOKUP, **overrides)

    def _beam_config(self, options: CallOptions, end_ids: list[int], **overrides: Any) -> Any:
        """The call's generation settings on the beam-search pipeline, where the adapter is picked per call."""
        lora = self.loras.get(options.adapter or "")
        adapters = genai.AdapterConfig() if lora is None else genai.AdapterConfig(lora.adapter, lora.alpha)
        return _generation_config(options, end_ids, adapters=adapters, **overrides)

    def _beam_pipeline(self) -> Any:
        """A pipeline for beam search (which prompt lookup does not allow), made on first need; call it holding the lock."""
        if self._beams is None:
            self._beams = _pipeline(self.folder, genai.AdapterConfig([lora.adapter for lora in self.loras.values()]))
        return self._beams

    def _produce(self, ids: list[int], options: CallOptions, end_ids: list[int], emit: Emit) -> None:
        pipeline = self.pipelines[options.adapter]
        bias = self._bias_ids(options.adapter)
        self._check_bias(bias, options)
        first = _Streamer(emit, hold=bias)  # a biased first token is held back: it may not be greedy's choice
        pipeline.generate(_inputs(ids), self._config(options, end_ids), first)
        if first.held is None:
            return
        chosen = self._biased_first_token(ids, options, end_ids, bias)
        if not emit(chosen) or chosen in end_ids or options.max_new_tokens == 1:
            return
        pipeline.generate(_inputs([*ids, chosen]), self._config(_fewer(options), end_ids), _Streamer(emit))

    def stream_many(
        self, batch: Sequence[Sequence[BaseMessage]], stop: list[str] | None = None, **kwargs: Any
    ) -> list[list[AIMessageChunk]]:
        """Every prompt of `batch` generated together (one pass over the weights per step for all of them).

        Greedy decoding picks the same tokens in a batch as alone (checked on the bundled model), so each
        prompt gets the chunks its own `stream` would yield; stop strings cut the text afterwards, and the
        timings are the whole batch's.
        """
        options = self.call_options(kwargs)
        prompts = [self._checked_prompt(messages, options) for messages in batch]
        end_ids = self._end_token_ids()
        waited = time.perf_counter()
        with self._hold(options.adapter):
            started = time.perf_counter()
            generated = self._generate_batch(prompts, options, end_ids)
        streams = []
        for ids, tokens in zip(prompts, generated, strict=True):
            decoding = Decoding(self.tokenizer, stop)
            pieces = []
            for token in tokens:  # as `stream` reads them: up to a stop string
                pieces.append(decoding.feed(token))
                if decoding.hit_stop:
                    break
            pieces.append(decoding.flush())
            last = self._last_chunk(decoding, ids, options, end_ids, started - waited, started)
            streams.append([AIMessageChunk(content=piece) for piece in pieces if piece] + [last.message])
        return streams

    def _generate_batch(self, prompts: list[list[int]], options: CallOptions, end_ids: list[int]) -> list[list[int]]:
        pipeline = self.pipelines[options.adapter]
        bias = self._bias_ids(options.adapter)
        self._check_bias(bias, options)
        generated = [
            list(tokens) for tokens in pipeline.generate(_padded(prompts), self._config(options, end_ids)).tokens
        ]
        for i, tokens in enumerate(generated):  # a biased first token: chosen again, as `_produce` chooses it
            if not tokens or tokens[0] not in bias:
                continue
            chosen = self._biased_first_token(prompts[i], options, end_ids, bias)
            if chosen == tokens[0]:
                continue  # the bias was not enough: greedy's own answer stands
            rest = []
            if chosen not in end_ids and options.max_new_tokens > 1:
                config = self._config(_fewer(options), end_ids)
                rest = list(pipeline.generate(_inputs([*prompts[i], chosen]), config).tokens[0])
            generated[i] = [chosen, *rest]
        return generated

    def _check_bias(self, bias: dict[int, float], options: CallOptions) -> None:
        if bias and options.temperature > 0:
            raise InvalidOptionError(
                f"Adapter {options.adapter!r} has a first_token_bias, which OpenVINO applies to greedy answers "
                "only: use temperature 0, or RAG_LLM_RUNTIME=transformers."
            )

    def _biased_first_token(self, ids: list[int], options: CallOptions, end_ids: list[int], bias: dict) -> int:
        """The first token greedy decoding picks once `bias` is added (see the module docstring)."""
        width = len(bias) + 1
        config = self._beam_config(options, end_ids, max_new_tokens=1, num_beams=width, num_return_sequences=width)
        found = self._beam_pipeline().generate(_inputs(ids), config)
        candidates = [(tokens[0], score) for tokens, score in zip(found.tokens, found.scores, strict=True) if tokens]
        return max(candidates, key=lambda pair: pair[1] + bias.get(pair[0], 0.0))[0]


def _generation_config(options: CallOptions, end_ids: list[int], **settings: Any) -> Any:
    config = genai.GenerationConfig()
    config.max_new_tokens = options.max_new_tokens
    config.do_sample = options.temperature > 0
    if config.do_sample:
        config.temperature = options.temperature
    config.repetition_penalty = options.repetition_penalty
    config.stop_token_ids = set(end_ids)
    for name, value in settings.items():
        setattr(config, name, value)
    return config


def _fewer(options: CallOptions) -> CallOptions:
    return CallOptions(options.adapter, options.max_new_tokens - 1, options.temperature, options.repetition_penalty)


def _inputs(ids: list[int]) -> Any:
    return _padded([ids])


def _padded(prompts: list[list[int]]) -> Any:
    """A batch of prompts, padded on the left to one length (the mask hides the padding)."""
    width = max(len(ids) for ids in prompts)
    ids = np.array([[0] * (width - len(p)) + p for p in prompts], dtype=np.int64)
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=np.int64)
    return genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(mask))


class _Streamer(genai.StreamerBase):
    """Hands each generated token id to `emit`, and stops generation when it says so.

    A first token in `hold` is kept back in `held` and ends generation there: the caller decides it.
    """

    def __init__(self, emit: Emit, hold: Collection[int] = ()) -> None:
        super().__init__()
        self.emit, self.hold = emit, hold
        self.started, self.held = False, None

    def write(self, token: int | list[int]) -> Any:
        for one in token if isinstance(token, list) else [token]:
            if not self.started:
                self.started = True
                if one in self.hold:
                    self.held = one
                    return genai.StreamingStatus.STOP
            if not self.emit(one):
                return genai.StreamingStatus.STOP
        return genai.StreamingStatus.RUNNING

    def end(self) -> None:
        pass


def load_pipelines(
    folder: Path, adapters: list[Adapter]
) -> tuple[dict[str | None, Any], dict[str, LoraAdapter], dict[str, str]]:
    """The exported model's pipelines: the base model's and one per adapter (at its PEFT scale); and why some are not."""
    loras, problems = {}, {}
    for adapter in adapters:
        try:
            scale = lora_scale(json.loads((adapter.path / CONFIG_FILE).read_text()))
            loras[adapter.name] = LoraAdapter(genai.Adapter(str(adapter.path / WEIGHTS_FILE)), scale)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            problems[adapter.name] = _unloadable(adapter, error)
    # Static: the adapter's branch compiled in beside the weights. MODE_FUSE (adding it into the weights) decodes ~6%
    # faster in f32 but rounds differently: on the tiny test model it flipped a first token PEFT picks by 0.05.
    mode = genai.AdapterConfig.Mode.MODE_STATIC
    pipelines = {None: _pipeline(folder, lookup=True)}
    for name, lora in list(loras.items()):
        try:
            pipelines[name] = _pipeline(folder, genai.AdapterConfig(lora.adapter, lora.alpha, mode), lookup=True)
        except LoadError as error:  # weights that do not fit the model's layers
            problems[name] = _unloadable(next(a for a in adapters if a.name == name), error)
            del loras[name]
    return pipelines, loras, problems


def _unloadable(adapter: Adapter, error: Exception) -> str:
    return (
        f"adapter {adapter.name!r} in {adapter.path} could not be loaded ({first_line(error)}): "
        "re-train it on this model, or remove the folder."
    )


def _pipeline(folder: Path, adapters: Any = None, *, lookup: bool = False) -> Any:
    """An LLMPipeline over the exported model: with fixed weights (`lookup`), a prefix cache and prompt lookup."""
    options = {"adapters": adapters} if adapters is not None else {}
    if lookup:
        options["prompt_lookup"] = True
    try:
        return genai.LLMPipeline(str(folder), "CPU", scheduler_config=_scheduler(lookup), **options, **PROPERTIES)
    except RuntimeError as error:
        raise LoadError(f"OpenVINO could not load {folder} ({first_line(error)})") from error


def build_openvino_chat_model(
    settings: Settings,
    adapters: list[Adapter],
    biases: dict[str, dict[str, float]],
    *,
    max_new_tokens: int,
    scorer: Callable[[], LocalChatModel] | None = None,
) -> tuple[OpenVinoChatModel, dict[str, str]]:
    """The generator the settings name on OpenVINO (exported once), with the `adapters` that fit it; and why not the rest."""
    from transformers import AutoTokenizer  # the tokenizer only; no model weights go through torch here

    name, source = generator_source(settings)
    folder, _ = ensure_export(settings.cache_dir, source, settings.llm_weights)
    problems = {
        a.name: p for a in adapters if (p := a.problem_with(name) or openvino_problem(a, biases.get(a.name, {})))
    }
    pipelines, loras, unloadable = load_pipelines(folder, [a for a in adapters if a.name not in problems])
    config = json.loads((source / "config.json").read_text())
    generation = source / "generation_config.json"
    eos = json.loads(generation.read_text()).get("eos_token_id") if generation.is_file() else None
    model = OpenVinoChatModel(
        pipelines=pipelines,
        loras=loras,
        folder=folder,
        tokenizer=AutoTokenizer.from_pretrained(source, local_files_only=True),
        model_name=name,
        context_window=config.get("max_position_embeddings"),
        max_new_tokens=max_new_tokens,
        first_token_bias={adapter: bias for adapter, bias in biases.items() if adapter in loras and bias},
        eos_ids=[] if eos is None else eos if isinstance(eos, list) else [eos],
        weights={
            "source": str(source),
            "files": files_fingerprint(source, WEIGHT_SUFFIXES),
            "runtime": "openvino",
            "weights": settings.llm_weights,
            "decoding": "prompt lookup",  # same tokens as plain greedy, save a near tie
        },
        scorer=scorer,
    )
    return model, {**problems, **unloadable}
