"""A model behind an OpenAI-compatible server (vLLM, Ollama, ...) as the engine's chat model.

`RemoteChatModel` answers the calls the engine makes on `LocalChatModel` (`stream` with a
per-call `adapter=`, `count_tokens`, `render`, `tokenizer`, `context_window`), so the engine
cannot tell them apart. The adapter switch is the request's `model` field: vLLM started with
`--enable-lora --lora-modules support-rag=PATH` serves the base model under its own name and
each PEFT folder under the adapter's name, so "adapter on" sends the adapter's name and
"adapter off" the base model's. `/v1/models` lists both; an adapter's entry has a `parent`,
the base it applies to.

Trade-off: the server does the sampling and the stop strings, and shares nothing with this
process, so no lock is needed and concurrent answers batch on the server; but it returns text,
not logits, so an adapter cannot be probed (answer loss) through it.

HTTP goes through langchain-openai's chat model (SSE parsing); its errors become
`RagtuneError`s that say what to do. It is imported inside the builder: importing the engine
must stay cheap. Retries are ours, not the openai client's: its retries each get the whole
timeout, so a user could wait three times `RAG_LLM_TIMEOUT` under a message saying one. Here
`RAG_LLM_TIMEOUT` is one deadline for the answer to start, every try and pause included: each
try gets the time left, and no try starts that the deadline has no room for.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from adapters.card import AdapterCard
from adapters.registry import AdapterInfo
from chatbot.core.config import Settings, redact_url
from chatbot.core.errors import AdapterNotFoundError, ModelNotFoundError, RagtuneError
from chatbot.llm import tokens
from chatbot.llm.base import ChatModel
from chatbot.rag.prompts import chat_dicts, special_tokens

if TYPE_CHECKING:
    from langchain_core.callbacks import CallbackManagerForLLMRun

DEFAULT_CONTEXT_WINDOW = 4096  # when neither RAG_LLM_CONTEXT_WINDOW nor the server says (vLLM's max_model_len)
RETRIES = 2  # on connection errors, 408, 409, 429 and 5xx (the openai client's rule), within one deadline
BACKOFF = (0.5, 8.0)  # seconds before the first retry, doubling up to the second (unless Retry-After says)
T = TypeVar("T")


class RemoteChatModel(ChatModel):
    """A served model as a LangChain chat model; per call: `adapter` (a served adapter name, None = base),
    `max_new_tokens`, `temperature`, `repetition_penalty` and `stop`."""

    client: Any = Field(exclude=True, repr=False)  # langchain-openai's (Base)ChatOpenAI
    base_url: str  # as shown in messages: credentials in the URL are masked (the client holds the real one)
    model_name: str  # the served base model
    served: list[dict[str, Any]] = Field(default_factory=list)  # the /v1/models cards at start-up
    tokenizer: Any = Field(default_factory=tokens.EstimateTokenizer, exclude=True, repr=False)
    token_count: str = "estimate"  # how count_tokens counts: "tokenizer" or "estimate"
    context_window: int = Field(default=DEFAULT_CONTEXT_WINDOW, ge=1)
    timeout: float = 60.0  # seconds until the answer starts, retries included (RAG_LLM_TIMEOUT)
    retries: int = Field(default=RETRIES, ge=0)

    @property
    def _llm_type(self) -> str:
        return "ragtune-remote"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model_name": self.model_name, "context_window": self.context_window}

    def render(self, messages: Sequence[BaseMessage]) -> str:
        """The prompt as text (the server applies its own copy of the chat template)."""
        return tokens.render(self.tokenizer, messages)

    def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        """How many tokens the prompt takes, by the model's tokenizer or by estimate (see `token_count`)."""
        return tokens.count_tokens(self.tokenizer, messages)

    def answer_loss(self, messages: list[dict[str, str]], answer: str, *, adapter: str | None = None) -> float:
        """Not available: a server returns text, not the losses a probe compares."""
        raise RagtuneError(
            f"Cannot probe {adapter or self.model_name!r}: it is served by {self.base_url}, which returns text, "
            "not the answer loss a probe measures. Probe the adapter on a local model instead (unset "
            "RAG_LLM_BASE_URL, or set RAG_LOCAL_LLM=1 to load the local model next to the server)."
        )

    def adapter_names(self) -> list[str]:
        """The adapters the server serves on this base model."""
        return self.served_adapters

    def identity(self) -> dict[str, Any]:
        """The server, and the weights it says it serves under the base model's name."""
        return {"served_by": self.base_url, "root": self.served_root(self.model_name)}

    def served_root(self, name: str) -> str | None:
        """The weights the server lists behind a served name (vLLM's `root`: a model folder or id, a LoRA's path)."""
        return next((card.get("root") for card in self.served if card.get("id") == name), None)

    @property
    def served_adapters(self) -> list[str]:
        """The adapters the server listed on this base model at start-up (`parent` = the base)."""
        return [card["id"] for card in self.served if card.get("parent") == self.model_name]

    def served_models(self) -> list[str]:
        """The names the server's /v1/models lists now (base models and adapters)."""
        return [card["id"] for card in list_models(self.client.root_client, self.base_url, self.timeout, self.retries)]

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        import openai  # loaded already by the client

        options = self.call_options(kwargs)
        adapter = None if options.adapter == self.model_name else options.adapter  # the base model by name
        model = adapter or self.model_name
        request = {"model": model, "max_tokens": options.max_new_tokens, "temperature": options.temperature}
        if options.repetition_penalty != 1.0:  # not OpenAI's API: vLLM reads it from the body
            request["extra_body"] = {"repetition_penalty": options.repetition_penalty}
        # The server's tokenizer would read "<|im_end|>" in a message as the token: only its template may add one.
        chat = chat_dicts(messages, special_tokens=special_tokens(self.tokenizer))
        stops = [s for s in stop or () if s] or None

        def start(seconds: float) -> tuple[Iterator[AIMessageChunk], list[AIMessageChunk], float]:
            # The request is sent on the first next(): a try has succeeded once the answer has started.
            stream = self.client.stream(chat, stop=stops, timeout=seconds, **request)
            try:
                return stream, list(itertools.islice(stream, 1)), seconds
            except BaseException:
                stream.close()
                raise

        def failed(error: Exception, tries: int) -> RagtuneError:
            return self._error(error, model=model, adapter=adapter, tries=tries)

        stream, first, seconds = with_retries(start, timeout=self.timeout, retries=self.retries, failed=failed)
        try:
            for chunk in itertools.chain(first, stream):
                if run_manager and chunk.content:
                    run_manager.on_llm_new_token(str(chunk.content))
                yield ChatGenerationChunk(message=chunk)
        except openai.APITimeoutError as error:
            raise RagtuneError(
                f"RAG_LLM_BASE_URL={self.base_url} stopped in the middle of the answer (nothing for {seconds:g} s, "
                f"model {model!r}): is the server overloaded? Raise RAG_LLM_TIMEOUT, or ask for fewer new tokens."
            ) from error
        except openai.APIError as error:
            raise self._error(error, model=model, adapter=adapter) from error
        finally:
            stream.close()  # closes the HTTP response: vLLM aborts a request whose client has gone
        metadata = {"model_name": model, "adapter": adapter, "token_count": self.token_count}
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=metadata))

    def _error(self, error: Exception, *, model: str, adapter: str | None, tries: int = 1) -> RagtuneError:
        import openai

        if not isinstance(error, openai.NotFoundError):
            return server_error(error, self.base_url, self.timeout, model=model, tries=tries)
        try:
            served = ", ".join(repr(name) for name in self.served_models()) or "none"
        except RagtuneError:
            served = "(the list could not be read)"
        if adapter is None:
            return ModelNotFoundError(
                f"model {model!r} is not served at {self.base_url}: served models are {served}. "
                "Set RAG_LLM_MODEL to one of them, or serve it."
            )
        return AdapterNotFoundError(
            f"model {model!r} is not served at {self.base_url}: served models are {served}. Serve the adapter "
            f"(vllm serve {self.model_name} --enable-lora --lora-modules {model}=PATH), or pick another adapter."
        )


def with_retries(
    attempt: Callable[[float], T], *, timeout: float, retries: int, failed: Callable[[Exception, int], RagtuneError]
) -> T:
    """`attempt(seconds_left)`, tried again on a passing failure while the one `timeout` deadline leaves room.

    A failure for good, or the last one, becomes `failed(error, tries)`.
    """
    import openai

    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        try:
            return attempt(max(deadline - time.monotonic(), 0.001))
        except openai.APIError as error:
            pause = _pause(error, tries)
            if tries > retries or not _passing(error) or time.monotonic() + pause >= deadline:
                raise failed(error, tries) from error
            time.sleep(pause)


def _passing(error: Exception) -> bool:
    # What the openai client retries: no connection (timeouts included), 408, 409, 429 and 5xx.
    import openai

    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return isinstance(error, openai.APIConnectionError)


def _pause(error: Exception, tries: int) -> float:
    response = getattr(error, "response", None)
    try:
        return float(response.headers["retry-after"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return min(BACKOFF[0] * 2 ** (tries - 1), BACKOFF[1])


def server_error(
    error: Exception, base_url: str, timeout: float, *, model: str | None = None, tries: int = 1
) -> RagtuneError:
    """An openai client error (`openai.APIError`) as a RagtuneError that says what to do."""
    import openai

    base_url = redact_url(base_url)
    about = f" (model {model!r})" if model else ""
    tried = f", {tries} tries" if tries > 1 else ""
    if isinstance(error, openai.APITimeoutError):
        return RagtuneError(
            f"RAG_LLM_BASE_URL={base_url} did not answer within {timeout:g} s{about}{tried}: is the server "
            "overloaded? Raise RAG_LLM_TIMEOUT, or ask for fewer new tokens."
        )
    if isinstance(error, openai.APIConnectionError):
        return RagtuneError(
            f"cannot reach RAG_LLM_BASE_URL={base_url} ({_reason(error)}{tried}): is the server running?"
        )
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return RagtuneError(
            f"RAG_LLM_BASE_URL={base_url} refused the request ({error.status_code}): set RAG_LLM_API_KEY to the "
            "server's key (the one given to `vllm serve --api-key`)."
        )
    status = f" {error.status_code}" if isinstance(error, openai.APIStatusError) else ""
    return RagtuneError(
        f"RAG_LLM_BASE_URL={base_url} answered with an error{status}{about}{tried}: {redact_url(error.message)}"
    )


def _reason(error: BaseException) -> str:
    # The openai client says only "Connection error."; the socket's reason is further down the chain.
    causes = []
    while error is not None and len(causes) < 10:
        causes.append(str(error))
        error = error.__cause__ or error.__context__
    text = " ".join(causes).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return "unknown host"
    return redact_url(causes[-1].splitlines()[0]) if causes[-1].strip() else "connection error"


def list_models(root_client: Any, base_url: str, timeout: float, retries: int = RETRIES) -> list[dict[str, Any]]:
    """The model cards the server's /v1/models lists (vLLM adds `root`, `parent` and `max_model_len`)."""
    import openai

    def failed(error: Exception, tries: int) -> RagtuneError:
        if isinstance(error, openai.NotFoundError):
            return RagtuneError(
                f"RAG_LLM_BASE_URL={redact_url(base_url)} has no /models endpoint (404): an OpenAI-compatible base "
                "URL usually ends in /v1, e.g. http://localhost:8000/v1."
            )
        return server_error(error, base_url, timeout, tries=tries)

    def attempt(seconds: float) -> list[dict[str, Any]]:
        return [card.model_dump() for card in root_client.models.list(timeout=seconds)]

    return with_retries(attempt, timeout=timeout, retries=retries, failed=failed)


def choose_base(cards: list[dict[str, Any]], wanted: str | None, base_url: str) -> dict[str, Any]:
    """The served base model: `RAG_LLM_MODEL`, or the only base model the server lists."""
    names = ", ".join(repr(card["id"]) for card in cards) or "none"
    if wanted:
        card = next((card for card in cards if card["id"] == wanted), None)
        if card is None:
            raise ModelNotFoundError(
                f"model {wanted!r} is not served at {base_url}: served models are {names}. "
                "Set RAG_LLM_MODEL to one of them (with RAG_LLM_BASE_URL it names a served model, not a folder)."
            )
        if card.get("parent"):
            raise ModelNotFoundError(
                f"RAG_LLM_MODEL={wanted} is an adapter served on {card['parent']}: set RAG_LLM_MODEL="
                f"{card['parent']} and pick the adapter per question (adapter={wanted!r})."
            )
        return card
    bases = [card for card in cards if not card.get("parent")]
    if len(bases) != 1:
        raise ModelNotFoundError(
            f"RAG_LLM_BASE_URL={base_url} serves {len(bases)} base models ({names}): "
            "set RAG_LLM_MODEL to the one to answer with."
        )
    return bases[0]


def build_remote_chat_model(
    settings: Settings, *, max_new_tokens: int = 256, temperature: float = 0.0, retries: int = RETRIES
) -> RemoteChatModel:
    """The model `RAG_LLM_BASE_URL` serves, checked against its /v1/models, as a chat model."""
    # ChatOpenAI's base class: ChatOpenAI itself renames max_tokens to OpenAI's newer max_completion_tokens,
    # which servers that predate it ignore. Imported here: it pulls in openai and httpx.
    from langchain_openai.chat_models.base import BaseChatOpenAI

    if settings.llm_base_url is None:
        raise RagtuneError("No model server is configured: set RAG_LLM_BASE_URL (e.g. http://localhost:8000/v1).")
    url = redact_url(settings.llm_base_url)  # what messages show; the client alone holds the credentials
    client = BaseChatOpenAI(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key or "EMPTY",  # the client insists on a key; a server without one ignores it
        model=settings.llm_model or "default",  # replaced per request by the base or adapter name
        timeout=settings.llm_timeout,
        max_retries=0,  # ours, within one deadline (with_retries)
        stream_usage=True,
        use_responses_api=False,  # vLLM and Ollama speak chat completions
    )
    cards = list_models(client.root_client, url, settings.llm_timeout, retries)
    base = choose_base(cards, settings.llm_model, url)
    tokenizer, counting = tokens.load_tokenizer(settings, base["id"])
    return RemoteChatModel(
        client=client,
        base_url=url,
        model_name=base["id"],
        served=cards,
        tokenizer=tokenizer,
        token_count=counting,
        context_window=settings.llm_context_window or base.get("max_model_len") or DEFAULT_CONTEXT_WINDOW,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        timeout=settings.llm_timeout,
        retries=retries,
    )


def served_adapter_infos(model: RemoteChatModel, *, beside_local: bool = False) -> list[AdapterInfo]:
    """The served adapters as loaded adapters; next to a local model, marked served, with the served base too."""
    card = AdapterCard(base_model=model.model_name, served_by=model.base_url)
    infos = [AdapterInfo(name, card, served=beside_local) for name in model.served_adapters]
    if beside_local:
        infos.insert(0, AdapterInfo(model.model_name, card, served=True))
    return infos


def remote_adapters(settings: Settings, model: RemoteChatModel) -> list[AdapterInfo]:
    """What a served model can switch to, then the local registry's adapters, which it cannot load."""
    from adapters.registry import adapter_dirs, discover

    served = served_adapter_infos(model)
    names = {info.name for info in served}
    local = [
        AdapterInfo(
            adapter.name,
            adapter.card,
            str(adapter.path),
            loaded=False,
            problem=(
                f"the served model takes adapters by name: serve this folder on {model.base_url} "
                f"(vllm serve {model.model_name} --enable-lora --lora-modules {adapter.name}={adapter.path})"
            ),
        )
        for adapter in discover(adapter_dirs(settings))
        if adapter.name not in names
    ]
    return served + local
