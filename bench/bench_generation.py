"""Generation speed of the bundled SmolLM2 through `LocalChatModel`, and what the adapter toggle costs.

On a CPU the answer's wait is the generator's: time to first token (mostly prompt
prefill, so it grows with the retrieved context) and decode speed. Both are read from
the metadata the stream's last chunk carries, at a ~200- and a ~1,500-token prompt of
real sample-KB passages, greedy, median of 3 runs. The baseline is the plain model at
the 200-token prompt in the same run. Then the LoRA toggle: the same model wrapped by
peft (random, non-zero LoRA weights), called with the adapter off (`adapter=None`), on
and unmerged, and as a merged copy (the speed a merged adapter would give); and the
cost of switching adapters between calls, as 1-token calls alternating adapters
against calls that keep one. Last, one end-to-end row: a `ChatEngine` over data/kb
answering sample questions, its own timings broken down by step.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import SHARED_NOTE, emit, ingest_sample_kb, machine_line, parse_args, sample_chunks, sample_questions
from common import table, timed
from langchain_core.messages import BaseMessage, HumanMessage

from chatbot.config import Settings
from chatbot.engine import ChatEngine
from chatbot.generation import LocalChatModel, build_chat_model, use_adapter
from chatbot.models import load_embeddings, load_generator
from chatbot.prompts import Examples, Passage, Strategy, build_messages
from chatbot.retrieval import Retriever

TARGETS = (200, 1500)  # prompt sizes in the generator's tokens
HEADERS = ("model", "prompt tokens", "output tokens", "TTFT ms", "decode tok/s", "TTFT vs base", "tok/s vs base")
STEPS = ("condense", "retrieve", "prompt", "first_token", "generate")


def sized_prompt(chat: LocalChatModel, target: int, question: str, chunks: list[Any]) -> list[BaseMessage]:
    """The RAG prompt for `question` with as many sample-KB passages as fit in `target` tokens, the last one cut."""
    examples = Examples.load()

    def messages(passages: list[Passage]) -> list[BaseMessage]:
        return build_messages(question, passages, strategy=Strategy.ZERO_SHOT, examples=examples)

    passages: list[Passage] = []
    for chunk in chunks:
        title, section, words = chunk.metadata["title"], chunk.metadata["section"], chunk.page_content.split()
        if chat.count_tokens(messages([*passages, Passage(title, section, chunk.page_content)])) < target:
            passages.append(Passage(title, section, chunk.page_content))
            continue
        low, high = 0, len(words)  # the longest prefix of this passage that still fits
        while low < high:
            middle = (low + high + 1) // 2
            fits = chat.count_tokens(messages([*passages, Passage(title, section, " ".join(words[:middle]))]))
            low, high = (middle, high) if fits <= target else (low, middle - 1)
        return messages([*passages, Passage(title, section, " ".join(words[:low]))])
    raise RuntimeError(f"the sample KB holds fewer than {target} tokens of passages")


def one_run(chat: LocalChatModel, messages: list[BaseMessage], **options: Any) -> tuple[float, float, int]:
    """Seconds to first token, decode tokens/s, and output tokens of one streamed call, from its metadata."""
    last = None
    for chunk in chat.stream(messages, **options):
        last = chunk if "total_seconds" in chunk.response_metadata else last
    meta, tokens = last.response_metadata, last.usage_metadata["output_tokens"]
    first, total = meta["seconds_to_first_token"], meta["total_seconds"]
    # The first token comes out of the prefill; the rest are decoded after it.
    return first, (tokens - 1) / (total - first) if tokens > 1 else float("nan"), tokens


def median_run(chat: LocalChatModel, messages: list[BaseMessage], runs: int, **options: Any) -> tuple[float, ...]:
    """The median of each of `one_run`'s numbers over `runs` calls, after one untimed call."""
    one_run(chat, messages, **options)
    results = [one_run(chat, messages, **options) for _ in range(runs)]
    return tuple(statistics.median(column) for column in zip(*results, strict=True))


def toggle_seconds(model: Any, name: str | None, repeats: int = 200) -> float:
    """Mean seconds `use_adapter` takes to switch to `name` and back, with nothing generated."""
    started = time.perf_counter()
    for _ in range(repeats):
        with use_adapter(model, name):
            pass
    return (time.perf_counter() - started) / repeats


def switch_cost(chat: LocalChatModel, calls: int) -> dict[str, float]:
    """Median wall seconds of a 1-token call: adapter kept off, kept on, and alternating between calls."""
    messages = [HumanMessage("Hi")]
    sequences = {"off": [None] * calls, "on": ["default"] * calls, "alternating": [None, "default"] * (calls // 2)}
    chat.invoke(messages, max_new_tokens=1)
    return {
        name: statistics.median(timed(chat.invoke, messages, adapter=a, max_new_tokens=1)[1] for a in adapters)
        for name, adapters in sequences.items()
    }


def end_to_end(local: Any, max_new_tokens: int | None, questions: list[str]) -> tuple[dict[str, float], list[Any]]:
    """Mean seconds per engine step over `questions`, and the answers; the engine is built like `build_engine`'s."""
    settings = Settings()
    embeddings = load_embeddings(settings)
    with tempfile.TemporaryDirectory(prefix="bench-qdrant-") as folder:
        store = ingest_sample_kb(Path(folder), embeddings)
        options = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
        engine = ChatEngine(Retriever(store, embeddings, top_k=settings.top_k), build_chat_model(local, **options))
        try:
            engine.answer(questions[0])  # warm-up: the first query and generation pay one-off costs
            answers = [engine.answer(question) for question in questions]
        finally:
            engine.close()
    means = {step: statistics.mean(a.timings.get(step, float("nan")) for a in answers) for step in STEPS}
    return means, answers


def main() -> None:
    args = parse_args("Generator TTFT and decode speed, the LoRA toggle's cost, and one end-to-end answer.")
    max_new, runs = (16, 1) if args.quick else (48, 3)
    settings = Settings()
    local, t_load = timed(load_generator, settings)
    chat = build_chat_model(local, max_new_tokens=max_new)
    chunks, question = sample_chunks(), sample_questions(1)[0]
    prompts = {target: sized_prompt(chat, target, question, chunks) for target in TARGETS}
    sizes = {target: chat.count_tokens(messages) for target, messages in prompts.items()}
    print(f"generator loaded in {t_load:.2f} s; prompt tokens {sizes}", flush=True)

    measured: list[tuple[str, int, tuple[float, ...]]] = []

    def measure(label: str, model: LocalChatModel, **options: Any) -> None:
        for target, messages in prompts.items():
            print(f"{label} @ {sizes[target]} tokens...", flush=True)
            measured.append((label, sizes[target], median_run(model, messages, runs, **options)))

    measure("plain SmolLM2-135M", chat)
    print("end to end...", flush=True)
    steps, answers = end_to_end(local, max_new if args.quick else None, sample_questions(3))

    from peft import LoraConfig, get_peft_model  # imports torch; changes `local.model` in place

    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(local.model, config).eval()
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    peft_chat = build_chat_model(dataclasses.replace(local, model=peft_model), max_new_tokens=max_new)
    measure("PeftModel, adapter=None (off)", peft_chat)
    measure('PeftModel, adapter="default" (unmerged)', peft_chat, adapter="default")
    measure(
        "merged copy (`merge_and_unload`)",
        build_chat_model(dataclasses.replace(local, model=merged), max_new_tokens=max_new),
    )
    print("adapter switching...", flush=True)
    calls = 6 if args.quick else 20
    switching = switch_cost(peft_chat, calls)
    toggles = {name: toggle_seconds(peft_model, name) for name in (None, "default")}

    base_ttft, base_rate = measured[0][2][0], measured[0][2][1]
    rows = [
        [
            label,
            tokens,
            f"{out:.0f}",
            f"{ttft * 1e3:.0f}",
            f"{rate:.1f}",
            f"{ttft / base_ttft:.2f}x",
            f"{rate / base_rate:.2f}x",
        ]
        for label, tokens, (ttft, rate, out) in measured
    ]
    rows[0][-2:] = ["**1.00x (baseline)**", "**1.00x (baseline)**"]
    constant = (switching["off"] + switching["on"]) / 2
    total = sum(steps[step] for step in STEPS if step != "first_token")
    step_rows = [[step, f"{steps[step] * 1e3:.0f}", f"{steps[step] / total:.0%}"] for step in STEPS]
    step_rows.append(["**total** (first_token is inside generate)", f"{total * 1e3:.0f}", "100%"])
    out_tokens = [a.usage.get("output_tokens", 0) for a in answers]
    lines = [
        "## Generation speed and the adapter toggle",
        "",
        f"Machine: {machine_line()}.",
        "",
        f"Greedy, max_new_tokens={max_new}, median of {runs} run(s) after one untimed run; the question is "
        f'"{question}" with sample-KB passages filling the prompt. Generator load {t_load:.2f} s, not counted. '
        "TTFT and decode speed come from the last stream chunk's metadata "
        "(`seconds_to_first_token`, `total_seconds`, output tokens); decode tok/s = (output tokens - 1) / "
        "(total - TTFT). LoRA: r=16, alpha=32, all linear layers, `init_lora_weights=False`.",
        "",
        table(HEADERS, rows),
        "",
        f'Adapter switching ({calls} 1-token calls each, prompt "Hi", median wall ms per call): '
        f"adapter kept off {switching['off'] * 1e3:.1f}, kept on {switching['on'] * 1e3:.1f}, "
        f"alternating off/on {switching['alternating'] * 1e3:.1f}: switching costs "
        f"{(switching['alternating'] - constant) * 1e3:+.1f} ms a call over the mean of the constant two. "
        f"`use_adapter` alone (enter and exit, nothing generated): {toggles[None] * 1e3:.2f} ms for off, "
        f"{toggles['default'] * 1e3:.2f} ms for on; it runs on every call, switched or not.",
        "",
        f"End to end: `ChatEngine` over data/kb (ingested into a temp folder), {len(answers)} sample questions after "
        f"one warm-up, max_new_tokens={max_new if args.quick else chat_default()}; mean ms per step from "
        f"`Answer.timings`; {statistics.mean(out_tokens):.0f} output tokens on average, "
        f"{sum(a.abstained for a in answers)} abstained.",
        "",
        table(("step", "mean ms", "share of total"), step_rows),
        "",
        f"- {SHARED_NOTE}",
    ]
    emit("\n".join(lines), args.out)


def chat_default() -> int:
    """The max_new_tokens `build_engine` gives its chat model (`build_chat_model`'s default)."""
    return inspect.signature(build_chat_model).parameters["max_new_tokens"].default


if __name__ == "__main__":
    main()
