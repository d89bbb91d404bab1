"""The chat engine that the page, the CLIs and the evaluation all call.

One question flows condense -> retrieve -> prompt (`prepare`, a frozen `Prepared`) ->
model -> post-process (`stream`). Every lever is a per-call argument (`use_retrieval`,
`adapter`, `strategy`, `top_k`; see `chatbot.options.AnswerOptions`), so one engine serves
many sessions with different toggles; the only state it holds is the loaded models and the
store. `chatbot.build.build_engine` assembles one from the settings.

A 135M model does not abstain when told to, so abstention does not ask it: when
retrieval is on and the best passage's cosine similarity to the question is below
the collection's threshold (calibrated from the collection itself when it was
ingested, see `chatbot.rag.abstain`), the engine answers "I don't know" itself,
shows what it found, and generates nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Self

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from adapters.registry import AdapterInfo
from chatbot.answer import Answer
from chatbot.core.errors import AdapterNotFoundError, InvalidOptionError
from chatbot.core.text import heading_path
from chatbot.options import AnswerOptions
from chatbot.rag.abstain import DEFAULT_THRESHOLD, threshold
from chatbot.rag.postprocess import (
    cited_numbers,
    cut_loop,
    is_refusal,
    split_reasoning,
    supporting_passages,
    visible_answer,
)
from chatbot.rag.prompts import Examples, Passage, Strategy, build_messages, chat_dicts
from chatbot.rag.retrieval import Hit, RetrievalMode, Retriever

if TYPE_CHECKING:
    from chatbot.llm.base import ChatModel
    from chatbot.llm.remote import RemoteChatModel
    from chatbot.rag.store import Store

ABSTAIN_THRESHOLD = DEFAULT_THRESHOLD  # the cut for a collection without its own (re-ingest to calibrate it)
DONT_KNOW = "I don't know. The help centre does not seem to cover this."
STOP = ["\nQuestion:", "<context>"]
_FOLLOW_UP = re.compile(r"\b(it|its|that|this|those|these|they|them|there|one|same|instead|also)\b", re.IGNORECASE)

History = Sequence[BaseMessage | tuple[str, str] | dict[str, str]]


@dataclass(frozen=True)
class Prepared:
    """A question made ready to generate: what was retrieved, the prompt, and the model that will answer."""

    question: str
    options: AnswerOptions
    search_query: str  # the question, joined to the previous one when it is a short follow-up
    hits: tuple[Hit, ...]
    abstain_reason: str | None  # set when the engine will say "I don't know" without generating
    messages: tuple[BaseMessage, ...]
    prompt: str  # the messages rendered as the model sees them
    timings: dict[str, float]
    model: ChatModel  # the chat model that answers (the served one when `options.served`)
    model_adapter: str | None  # the adapter's name on that model (None: its base)


class ChatEngine:
    """Answers questions over one collection with one generator; all toggles are per call."""

    def __init__(
        self,
        retriever: Retriever,
        chat_model: ChatModel,
        *,
        examples: Examples | None = None,
        abstain_threshold: float | None = None,
        history_tokens: int = 512,
        prompt_tokens: int = 2048,
        adapters: Sequence[AdapterInfo] | None = None,
        served: RemoteChatModel | None = None,
    ) -> None:
        self.retriever = retriever
        self.chat_model = chat_model
        self.served = served  # a served model next to the local one: `served=True` asks it
        loaded = chat_model.adapter_names()
        self._adapters = list(adapters) if adapters is not None else [AdapterInfo(name) for name in loaded]
        self.examples = examples or Examples.load()
        self.abstain_threshold = abstain_threshold  # None: the collection's calibrated cut, else the constant
        self.history_tokens = history_tokens
        self.prompt_tokens = prompt_tokens

    def close(self) -> None:
        """Release the store (a local Qdrant folder is locked while open)."""
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def store(self) -> Store:
        """The store the engine answers from (the page ingests through it: local Qdrant allows one client)."""
        return self.retriever.store

    @property
    def abstain_threshold(self) -> float:
        """The cosine under which the engine abstains: the one given, else the collection's, else the constant."""
        if self._abstain_threshold is not None:
            return self._abstain_threshold
        # Read on each use: re-ingesting (the page does it through this store) recalibrates the collection.
        return threshold(self.store)[0]

    @abstain_threshold.setter
    def abstain_threshold(self, value: float | None) -> None:
        self._abstain_threshold = value

    @property
    def model_name(self) -> str:
        """The generator's name, as adapters' cards record their base model."""
        return self.chat_model.model_name

    def adapters(self) -> list[AdapterInfo]:
        """Every registered adapter: the loaded ones can be passed as `adapter=`; the others say why not."""
        return list(self._adapters)

    def probe(self, adapter: str, *, served: bool = False) -> dict[str, Any]:
        """Is `adapter` applied? The answer loss on its card's held-out pairs with it off and on."""
        info = next((item for item in self._adapters if (item.name, item.served) == (adapter, served)), None)
        if info is None or not info.loaded:
            reason = info.problem if info else "no adapter of that name is registered"
            raise AdapterNotFoundError(f"Cannot probe adapter {adapter!r}: {reason}.")
        pairs = info.card.probe or [_example_pair(item, self.examples) for item in self.examples.items]
        model, name = self._route(AnswerOptions(adapter=adapter, served=served))
        base = [model.answer_loss(p["messages"], p["answer"], adapter=None) for p in pairs]
        tuned = [model.answer_loss(p["messages"], p["answer"], adapter=name) for p in pairs]
        base_loss, adapter_loss = sum(base) / len(base), sum(tuned) / len(tuned)
        return {
            "adapter": adapter,
            "pairs": len(pairs),
            "base_loss": round(base_loss, 4),
            "adapter_loss": round(adapter_loss, 4),
            "delta": round(base_loss - adapter_loss, 4),
            # A LoRA that is not applied (or is all zeros) leaves the loss exactly where it was.
            "applied": abs(base_loss - adapter_loss) > 1e-4,
        }

    def answer(
        self,
        question: str,
        history: History = (),
        *,
        use_retrieval: bool = True,
        adapter: str | None = None,
        strategy: str | Strategy = Strategy.ZERO_SHOT,
        top_k: int | None = None,
        mode: str | RetrievalMode | None = None,
        served: bool = False,
        abstain: bool = True,
    ) -> Answer:
        """Answer one question; each lever is a per-call argument (see `AnswerOptions`)."""
        options = AnswerOptions(use_retrieval, adapter, strategy, top_k, mode, served, abstain)
        *_, answer = self._stream(self.prepare(question, history, options))
        return answer

    def answer_many(self, questions: Sequence[str], options: AnswerOptions | None = None) -> list[Answer]:
        """Answer several questions (no history) with one set of options: what `answer` gives each.

        The questions the model answers go to it together (`ChatModel.stream_many`), which a runtime that
        batches, OpenVINO's, generates at once; each answer's timings are then the batch's.
        """
        prepared = [self.prepare(question, (), options) for question in questions]
        asked = [p for p in prepared if p.abstain_reason is None]
        replies = iter(
            asked[0].model.stream_many([p.messages for p in asked], adapter=asked[0].model_adapter, stop=STOP)
            if asked
            else []
        )
        answers = []
        for item in prepared:
            *_, answer = self._stream(item, None if item.abstain_reason else next(replies))
            answers.append(answer)
        return answers

    def stream(
        self,
        question: str,
        history: History = (),
        *,
        use_retrieval: bool = True,
        adapter: str | None = None,
        strategy: str | Strategy = Strategy.ZERO_SHOT,
        top_k: int | None = None,
        mode: str | RetrievalMode | None = None,
        served: bool = False,
        abstain: bool = True,
    ) -> Iterator[str | Answer]:
        """Yield the answer's text as it is generated, then the final `Answer` (arguments as in `answer`)."""
        options = AnswerOptions(use_retrieval, adapter, strategy, top_k, mode, served, abstain)
        yield from self._stream(self.prepare(question, history, options))

    def prepare(
        self,
        question: str,
        history: History = (),
        options: AnswerOptions | None = None,
        *,
        sources: Sequence[str] | None = None,
    ) -> Prepared:
        """Condense, retrieve and build the prompt, without generating: what `stream` generates from.

        `sources` limits retrieval to those files.
        """
        options = options or AnswerOptions()
        model, model_adapter = self._route(options)
        timings: dict[str, float] = {}
        bounded = self._bounded_history(history)
        started = time.perf_counter()
        search_query = _condense(question, bounded)
        timings["condense"] = time.perf_counter() - started

        started = time.perf_counter()
        hits: list[Hit] = []
        abstain_reason = None
        if options.use_retrieval:
            hits = self.retriever.retrieve(search_query, k=options.top_k, mode=options.mode, sources=sources)
            abstain_reason = self._abstain_reason(hits) if options.abstain else None
        timings["retrieve"] = time.perf_counter() - started

        started = time.perf_counter()
        hits, messages = self._fit_prompt(question, bounded, hits, options, model)
        prompt = model.render(messages)
        timings["prompt"] = time.perf_counter() - started
        return Prepared(
            question=question,
            options=options,
            search_query=search_query,
            hits=tuple(hits),
            abstain_reason=abstain_reason,
            messages=tuple(messages),
            prompt=prompt,
            timings=timings,
            model=model,
            model_adapter=model_adapter,
        )

    def _route(self, options: AnswerOptions) -> tuple[ChatModel, str | None]:
        """The chat model that answers with these options, and the adapter's name on that model."""
        if not options.served:
            return self.chat_model, options.adapter
        if self.served is None:
            raise AdapterNotFoundError("No served model is configured: set RAG_LLM_BASE_URL and RAG_LOCAL_LLM.")
        return self.served, None if options.adapter == self.served.model_name else options.adapter

    # -- the steps -------------------------------------------------------------------------

    def _abstain_reason(self, hits: list[Hit]) -> str | None:
        if not hits:
            return "retrieval found no passage"
        best = max(hit.dense_score for hit in hits)
        threshold = self.abstain_threshold
        if best < threshold:
            return f"best passage similarity {best:.2f} is below the threshold {threshold:.2f}"
        return None

    def _fit_prompt(
        self, question: str, history: list[BaseMessage], hits: list[Hit], options: AnswerOptions, model: Any
    ) -> tuple[list[Hit], list[BaseMessage]]:
        """The messages, with as many of the passages as the prompt budget holds (the lowest-ranked go first)."""
        hits = list(hits)
        budget = min(self.prompt_tokens, model.context_window - model.max_new_tokens)
        while True:
            messages = build_messages(
                question,
                [Passage(hit.title, hit.section, hit.text) for hit in hits],
                strategy=options.strategy,
                examples=self.examples,
                history=history,
                use_retrieval=options.use_retrieval,
            )
            used = model.count_tokens(messages)
            if used <= budget:
                return hits, messages
            if len(hits) > 1:
                hits.pop()
            elif hits and hits[0].text:
                hits[0] = replace(hits[0], text=_cut_tokens(model.tokenizer, hits[0].text, used - budget))
            else:
                raise InvalidOptionError(
                    f"The question and history take {used} tokens, over the prompt budget of {budget}: "
                    "ask a shorter question or clear the chat."
                )

    def _stream(self, prepared: Prepared, reply: Sequence[Any] | None = None) -> Iterator[str | Answer]:
        options = prepared.options
        answer = Answer(
            text="",
            sources=list(prepared.hits),
            prompt=prepared.prompt,
            strategy=options.strategy.value,
            use_retrieval=options.use_retrieval,
            adapter=options.adapter,
            search_query=prepared.search_query,
            timings=dict(prepared.timings),
            abstained=prepared.abstain_reason is not None,
            abstain_reason=prepared.abstain_reason,
        )
        if answer.abstained:
            answer.text = _dont_know(answer.sources)
            yield answer.text
        else:
            yield from self._generate(prepared, answer, reply)
        yield answer

    def _generate(self, prepared: Prepared, answer: Answer, reply: Sequence[Any] | None = None) -> Iterator[str]:
        """Stream the model's answer into `answer` (or read `reply`, chunks it already generated), post-processed."""
        started = time.perf_counter()
        cot = prepared.options.strategy is Strategy.COT
        model = prepared.model
        text, shown, final, generated = "", 0, None, ""

        def new_text(safe: str) -> str:
            nonlocal shown
            visible = (visible_answer(safe) if cot else safe) or ""
            piece, shown = visible[shown:], max(shown, len(visible))
            return piece

        stream = (
            iter(reply)
            if reply is not None
            else model.stream(list(prepared.messages), adapter=prepared.model_adapter, stop=STOP)
        )
        try:
            for chunk in stream:
                final = chunk if final is None else final + chunk
                if not chunk.content:
                    continue
                answer.timings.setdefault("first_token", time.perf_counter() - started)
                text += chunk.content
                generated += chunk.content
                safe, looping = cut_loop(text)
                if piece := new_text(safe):
                    yield piece
                if looping:
                    text, answer.loop_cut = safe, True
                    break
        finally:
            if reply is None:
                stream.close()  # stops generation at once when we stopped reading
        if piece := new_text(text):
            yield piece  # what was held back as a possible repeat
        answer.timings["generate"] = time.perf_counter() - started
        if reply is not None and final is not None:  # generated before: the model's own timings say how long
            meta = final.response_metadata
            answer.timings["first_token"] = meta.get("seconds_to_first_token") or meta.get("total_seconds", 0.0)
            answer.timings["generate"] = meta.get("total_seconds", answer.timings["generate"])
        answer.reasoning, answer.text = split_reasoning(text) if cot else (None, text.strip())
        if cot and not shown and answer.text:
            yield answer.text  # the model never wrote "Answer:": show everything it wrote
        if final is not None and final.usage_metadata:
            answer.usage = dict(final.usage_metadata)
        if generated and "output_tokens" not in answer.usage:  # a stream cut at a loop ends before its usage
            answer.usage["output_tokens"] = len(model.tokenizer.encode(generated, add_special_tokens=False))
        if counted := model.token_count:  # a served model may count by estimate
            answer.usage["token_count"] = counted
        cited = any(1 <= n <= len(answer.sources) for n in cited_numbers(answer.text))
        if answer.sources and not cited and not is_refusal(answer.text):  # a refusal has no source to cite
            numbers = supporting_passages(answer.text, [hit.text for hit in answer.sources], question=prepared.question)
            if numbers:
                added = " " + " ".join(f"[{n}]" for n in numbers)
                answer.text += added
                answer.citations_added = numbers
                yield added

    def _bounded_history(self, history: History) -> list[BaseMessage]:
        messages = [_as_message(item) for item in history]
        kept: list[BaseMessage] = []
        total = 0
        for message in reversed(messages):  # the most recent turns matter most
            total += len(self.chat_model.tokenizer.encode(str(message.content), add_special_tokens=False))
            if total > self.history_tokens:
                break
            kept.append(message)
        return kept[::-1]


def _condense(question: str, history: list[BaseMessage]) -> str:
    # A rule, not the model: a 135M model rewrites questions worse than it answers them.
    # A short or pronoun-bearing follow-up is searched together with the previous question.
    question = question.strip()
    previous = next((m.content for m in reversed(history) if isinstance(m, HumanMessage)), None)
    follow_up = previous and (len(question.split()) <= 4 or _FOLLOW_UP.search(question))
    return f"{previous} {question}" if follow_up else question


def _cut_tokens(tokenizer: Any, text: str, excess: int) -> str:
    # Cut on a token boundary (decode a prefix of the ids), a little more than needed,
    # since re-tokenising the cut text can merge differently at the edge.
    ids = tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.decode(ids[: max(len(ids) - excess - 8, 0)])


def _as_message(item: BaseMessage | tuple[str, str] | dict[str, str]) -> BaseMessage:
    if isinstance(item, BaseMessage):
        return item
    role, content = (item["role"], item["content"]) if isinstance(item, dict) else item
    return HumanMessage(content) if role in ("user", "human") else AIMessage(content)


def _dont_know(hits: list[Hit]) -> str:
    if not hits:
        return DONT_KNOW
    found = "; ".join(f"[{n}] {heading_path(hit.title, hit.section)}" for n, hit in enumerate(hits[:3], 1))
    return f"{DONT_KNOW} The closest pages I found: {found}."


def _example_pair(item: dict[str, Any], examples: Examples) -> dict[str, Any]:
    # An adapter without probe pairs on its card is probed on the few-shot examples, as RAG prompts.
    passages = [Passage(p["title"], p.get("section", ""), p["text"]) for p in item["context"]]
    messages = build_messages(item["question"], passages, strategy=Strategy.ZERO_SHOT, examples=examples)
    return {"messages": chat_dicts(messages), "answer": item["answer"]}
