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
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import (
    SHARED_NOTE,
    emit,
    ingest_sample_kb,
    machine_line,
    parse_args,
    sample_chunks,
    sample_questions,
    table,
    timed,
)
from langchain_core.messages import BaseMessage, HumanMessage

from chatbot.core.config import Settings
from chatbot.engine import ChatEngine
from chatbot.llm.loading import load_embeddings, load_generator
from chatbot.llm.local import LocalChatModel, build_chat_model, use_adapter
from chatbot.rag.prompts import Examples, Passage, Strategy, build_messages
from chatbot.rag.retrieval import Retriever

TARGETS = (200, 1500)  # prompt sizes in the generator's tokens
HEADERS = ("model", "prompt tok", "output tok", "wait ms", "TTFT ms", "decode tok/s", "TTFT vs base", "tok/s vs base")
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


def one_run(chat: LocalChatModel, messages: list[BaseMessage], **options: Any) -> tuple[float, ...]:
    """TTFT, decode tokens/s, output tokens and wait (lock + adapter switch) of one streamed call, from its metadata."""
    last = None
    for chunk in chat.stream(messages, **options):
        last = chunk if "total_seconds" in chunk.response_metadata else last
    meta, tokens = last.response_metadata, last.usage_metadata["output_tokens"]
    first, total = meta["seconds_to_first_token"], meta["total_seconds"]
    # The first token comes out of the prefill; the rest are decoded after it.
    rate = (tokens - 1) / (total - first) if tokens > 1 else float("nan")
    return first, rate, tokens, meta["wait_seconds"]


def median_runs(variants: dict[str, tuple[LocalChatModel, dict]], prompts: dict, runs: int) -> dict:
    """(variant, prompt) -> the median of each of `one_run`'s numbers, after one untimed call each.

    Runs are interleaved (every variant once per round) so that load drifting on a shared
    machine falls on all variants alike instead of on whichever ran last.
    """
    for chat, options in variants.values():
        for messages in prompts.values():
            one_run(chat, messages, **options)
    results: dict[tuple[str, int], list[tuple[float, ...]]] = defaultdict(list)
    for round_number in range(runs):
        print(f"round {round_number + 1} of {runs}...", flush=True)
        for label, (chat, options) in variants.items():
            for target, messages in prompts.items():
                results[(label, target)].append(one_run(chat, messages, **options))
    return {key: tuple(statistics.median(c) for c in zip(*values, strict=True)) for key, values in results.items()}


def switch_cost(chat: LocalChatModel, calls: int) -> dict[str | None, float]:
    """Median wall seconds of a 1-token call with the adapter kept off, kept on, or alternating between
    calls; and mean seconds of `use_adapter` alone (switch and restore, nothing generated) for None and "default"."""
    messages = [HumanMessage("Hi")]
    sequences = {"off": [None] * calls, "on": ["default"] * calls, "alternating": [None, "default"] * (calls // 2)}
    chat.invoke(messages, max_new_tokens=1)
    costs: dict[str | None, float] = {
        name: statistics.median(timed(chat.invoke, messages, adapter=a, max_new_tokens=1)[1] for a in adapters)
        for name, adapters in sequences.items()
    }
    for name in (None, "default"):
        started = time.perf_counter()
        for _ in range(200):
            with use_adapter(chat.model, name):
                pass
        costs[name] = (time.perf_counter() - started) / 200
    return costs


def end_to_end(local: Any, max_new_tokens: int | None, questions: list[str]) -> tuple[dict[str, float], list, int]:
    """Mean seconds per engine step over `questions`, the answers, and max_new_tokens; built as `build_engine` does."""
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
    return means, answers, engine.chat_model.max_new_tokens


def main() -> None:
    args = parse_args("Generator TTFT and decode speed, the LoRA toggle's cost, and one end-to-end answer.")
    max_new, runs = (16, 1) if args.quick else (32, 3)
    local, t_load = timed(load_generator, Settings())
    chat = build_chat_model(local, max_new_tokens=max_new)
    chunks, question = sample_chunks(), sample_questions(1)[0]
    prompts = {target: sized_prompt(chat, target, question, chunks) for target in TARGETS}
    sizes = {target: chat.count_tokens(messages) for target, messages in prompts.items()}
    print(f"generator loaded in {t_load:.2f} s; prompt tokens {sizes}", flush=True)

    print("end to end...", flush=True)
    steps, answers, engine_max_new = end_to_end(local, max_new if args.quick else None, sample_questions(3))

    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)  # the random LoRA weights, so every run generates the same tokens
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    # get_peft_model injects LoRA layers into the model it is given: wrap a copy, keep the plain one plain.
    peft_model = get_peft_model(copy.deepcopy(local.model), config).eval()
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    peft_chat = build_chat_model(dataclasses.replace(local, model=peft_model), max_new_tokens=max_new)
    merged_chat = build_chat_model(dataclasses.replace(local, model=merged), max_new_tokens=max_new)
    variants = {
        "plain SmolLM2-135M": (chat, {}),
        "PeftModel, adapter=None (off)": (peft_chat, {}),
        'PeftModel, adapter="default" (unmerged)': (peft_chat, {"adapter": "default"}),
        "merged copy (`merge_and_unload`)": (merged_chat, {}),
    }
    print(f"{len(variants)} variants x {len(prompts)} prompts, {runs} round(s)...", flush=True)
    measured = median_runs(variants, prompts, runs)
    print("adapter switching...", flush=True)
    calls = 6 if args.quick else 20
    switching = switch_cost(peft_chat, calls)

    base_ttft, base_rate = measured[(next(iter(variants)), TARGETS[0])][:2]
    rows = [
        [label, sizes[target], f"{out:.0f}", f"{wait * 1e3:.0f}", f"{ttft * 1e3:.0f}", f"{rate:.1f}",
         f"{ttft / base_ttft:.2f}x", f"{rate / base_rate:.2f}x"]
        for (label, target), (ttft, rate, out, wait) in measured.items()
    ]  # fmt: skip
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
        "TTFT, decode speed and wait come from the last stream chunk's metadata (`seconds_to_first_token`, "
        "`total_seconds`, output tokens, `wait_seconds`); decode tok/s = (output tokens - 1) / (total - TTFT). "
        "`wait_seconds` is the lock wait *and* the adapter switch (`use_adapter`), which TTFT leaves out. "
        "LoRA: r=16, alpha=32, all linear layers, `init_lora_weights=False`; runs interleaved across variants.",
        "",
        table(HEADERS, rows),
        "",
        f'Adapter switching ({calls} 1-token calls each, prompt "Hi", median wall ms per call): '
        f"adapter kept off {switching['off'] * 1e3:.1f}, kept on {switching['on'] * 1e3:.1f}, "
        f"alternating off/on {switching['alternating'] * 1e3:.1f}: switching costs "
        f"{(switching['alternating'] - constant) * 1e3:+.1f} ms a call over the mean of the constant two. "
        f"`use_adapter` alone (enter and exit, nothing generated): {switching[None] * 1e3:.2f} ms for off, "
        f"{switching['default'] * 1e3:.2f} ms for on; it runs on every call, switched or not.",
        "",
        f"End to end: `ChatEngine` over data/kb (ingested into a temp folder), {len(answers)} sample questions after "
        f"one warm-up, max_new_tokens={engine_max_new}; mean ms per step from "
        f"`Answer.timings`; {statistics.mean(a.usage.get('input_tokens', 0) for a in answers):.0f} prompt and "
        f"{statistics.mean(out_tokens):.0f} output tokens on average, "
        f"{sum(a.abstained for a in answers)} abstained.",
        "",
        table(("step", "mean ms", "share of total"), step_rows),
        "",
        f"- {SHARED_NOTE}",
    ]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
