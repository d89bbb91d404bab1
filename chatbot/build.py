"""Assemble the engine from the settings: the store, the embedder, the generator and its adapters.

The one way the page, the CLIs and adapter calibration get an engine. Heavy imports (torch,
transformers, the OpenAI client) happen inside: importing this module stays cheap.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from adapters.registry import AdapterInfo
from chatbot.core.config import Settings
from chatbot.core.errors import LoadError, first_line
from chatbot.engine import ChatEngine
from chatbot.rag.prompts import Examples
from chatbot.rag.retrieval import Retriever

if TYPE_CHECKING:
    from chatbot.llm.local import LocalChatModel, LocalRuntime

_LOG = logging.getLogger(__name__)
MAX_NEW_TOKENS = 160  # an answer's length: a few sentences with citations


def load_adapters(settings: Settings, local: Any) -> tuple[Any, list[AdapterInfo]]:
    """Every registered adapter that fits the generator, on one PeftModel; the rest listed with the reason."""
    from adapters.loading import attach
    from adapters.registry import adapter_dirs, discover

    registered = discover(adapter_dirs(settings))
    model, problems = attach(local.model, registered, local.name)
    infos = [
        AdapterInfo(a.name, a.card, str(a.path), loaded=a.name not in problems, problem=problems.get(a.name))
        for a in registered
    ]
    return model, infos


def build_engine(settings: Settings, *, require_collection: bool = True) -> ChatEngine:
    """Load the models and open the store the settings name: the one way the page and CLIs get an engine.

    With `RAG_LLM_BASE_URL` the served model answers and its adapters are picked by name; with
    `RAG_LOCAL_LLM` as well, the local model answers and `served=True` asks the served one.
    """
    from chatbot.llm.loading import embed_model_name, load_embeddings
    from chatbot.rag.store import Store

    store = Store.open(settings)
    try:
        if require_collection:
            store.require_points()  # fail in a second, before the models take their seconds to load
        store.check_embedding(embed_model_name(settings))  # another model's vectors would search without an error
        served = None
        if settings.llm_base_url:
            from chatbot.llm.remote import build_remote_chat_model, remote_adapters, served_adapter_infos

            served = build_remote_chat_model(
                settings, max_new_tokens=MAX_NEW_TOKENS
            )  # a server that is down fails here
        retriever = Retriever(store, load_embeddings(settings), top_k=settings.top_k)
        examples = Examples.load(product=settings.product)
        if served is not None and not settings.local_llm:
            return ChatEngine(retriever, served, examples=examples, adapters=remote_adapters(settings, served))
        chat_model, adapters = _local_chat_model(settings.local_side() if served else settings)
        if served is not None:
            adapters += served_adapter_infos(served, beside_local=True)
        return ChatEngine(retriever, chat_model, examples=examples, adapters=adapters, served=served)
    except BaseException:
        store.close()
        raise


def _local_chat_model(settings: Settings) -> tuple[LocalRuntime, list[AdapterInfo]]:
    """The local generator on the runtime the settings name: OpenVINO, falling back to transformers, or transformers."""
    if settings.llm_runtime == "openvino":
        built = _openvino_chat_model(settings)
        if built is not None:
            return built
    return _transformers_chat_model(settings)


def _transformers_chat_model(settings: Settings) -> tuple[LocalChatModel, list[AdapterInfo]]:
    from chatbot.llm.loading import load_generator
    from chatbot.llm.local import build_chat_model  # imports torch

    local = load_generator(settings)
    model, adapters = load_adapters(settings, local)
    bias = {info.name: info.card.first_token_bias for info in adapters if info.loaded and info.card.first_token_bias}
    return build_chat_model(replace(local, model=model), max_new_tokens=MAX_NEW_TOKENS, first_token_bias=bias), adapters


def _openvino_chat_model(settings: Settings) -> tuple[LocalRuntime, list[AdapterInfo]] | None:
    # None, with a one-line warning, when OpenVINO GenAI is missing or cannot run this model: transformers then runs it.
    from adapters.registry import adapter_dirs, discover

    try:
        from chatbot.llm.ov_runtime import build_openvino_chat_model
    except ImportError as error:
        _warn_fallback(f"OpenVINO GenAI is not installed ({first_line(error)}): `pip install openvino-genai`")
        return None
    registered = discover(adapter_dirs(settings))
    biases = {a.name: a.card.first_token_bias for a in registered if not a.error and a.card.first_token_bias}
    try:
        model, problems = build_openvino_chat_model(
            settings,
            registered,
            biases,
            max_new_tokens=MAX_NEW_TOKENS,
            scorer=lambda: _transformers_chat_model(settings)[0],  # the probe and calibration need logits
        )
    except LoadError as error:
        _warn_fallback(str(error))
        return None
    infos = [
        AdapterInfo(a.name, a.card, str(a.path), loaded=a.name not in problems, problem=problems.get(a.name))
        for a in registered
    ]
    return model, infos


def _warn_fallback(reason: str) -> None:
    _LOG.warning(
        "ragtune: generating with transformers, as %s; set RAG_LLM_RUNTIME=transformers to silence this.", reason
    )
