"""Does a bigger local generator stay practical? Decode speed of ~0.5B and ~1.5B Llama models on both runtimes.

No model that size is bundled or downloaded, and speed does not depend on what the weights
say, so each model is built here: transformers' `LlamaConfig` + `LlamaForCausalLM`, randomly
initialised (seed 0), f32, with the layer shapes of Qwen2.5-0.5B and SmolLM2-1.7B, saved to a
temp folder with the bundled SmolLM2 tokenizer. Random weights could pick an end token early,
so the end tokens' (tied) embedding rows are zeroed: their logit is always 0, below the
largest of ~49k random logits, and greedy decoding runs to max_new_tokens. That tokenizer fixes the vocabulary at 49,152,
so the ~0.5B model's embedding is smaller than Qwen's (151,936 tokens): the table gives the
parameter counts actually built.

Each variant (transformers f32, OpenVINO f32, OpenVINO int8) runs in its own child process, so
its memory is returned and its peak RSS is its own (`ru_maxrss`); the OpenVINO export runs in a
grandchild (as in the app), whose peak is reported apart. A child loads the model as the app
does (`load_generator` / `build_openvino_chat_model` with `RAG_LLM_MODEL` = the folder), fills a
~200-token RAG prompt with sample-KB passages, and streams 32 greedy tokens: one untimed run,
then the median of 3, TTFT and decode tok/s from the stream's metadata as in bench_generation.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import SHARED_NOTE, emit, machine_line, parse_args, table

VOCAB = 49152  # the bundled SmolLM2 tokenizer's
END_IDS = (0, 2)  # SmolLM2's <|endoftext|> and <|im_end|> (its eos)
SHAPES = {  # name -> LlamaConfig layer shape
    "~0.5B (Qwen2.5-0.5B layers)": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
    },
    "~1.5B (SmolLM2-1.7B layers)": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
}
QUICK_SHAPES = {
    "tiny (--quick)": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
}
VARIANTS = (("transformers", "f32"), ("openvino", "f32"), ("openvino", "int8"))
PROMPT_TOKENS = 200
MEMORY_FACTOR = 2.5  # the f32 export holds the model about 2-3 times over
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
HEADERS = (
    "model",
    "runtime",
    "weights",
    "export s",
    "IR weights GiB",
    "load s",
    "prompt tok",
    "output tok",
    "TTFT ms",
    "decode tok/s",
    "TTFT vs transformers",
    "tok/s vs transformers",
    "peak RSS GiB",
    "export peak RSS GiB",
)


# --- the children's side ---------------------------------------------------------------------------


def build_model(folder: Path, shape: dict[str, int]) -> dict[str, Any]:
    """A random-weight f32 Llama with `shape` and SmolLM2's tokenizer, saved at `folder`; its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from chatbot.core.config import Settings
    from chatbot.llm.loading import ensure_generator_cache

    torch.manual_seed(0)
    # SmolLM2's special ids (1 <|im_start|>, 2 <|im_end|>), so the chat template and the end of turn agree
    config = LlamaConfig(
        vocab_size=VOCAB,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        dtype="float32",
        **shape,
    )
    started = time.perf_counter()
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # the end ids' (tied) rows at zero: their logit is 0, below the top random one, so
        model.get_input_embeddings().weight[list(END_IDS)] = 0.0  # greedy never ends before max_new_tokens
    parameters = sum(p.numel() for p in model.parameters())  # tied embeddings are one parameter here
    model.save_pretrained(folder)
    bundled = ensure_generator_cache(Settings())[0]
    for name in TOKENIZER_FILES:
        if (bundled / name).is_file():
            shutil.copy2(bundled / name, folder / name)
    return {"parameters": parameters, "build_seconds": time.perf_counter() - started}


def measure(folder: Path, cache: Path, runtime: str, weights: str, max_new: int, runs: int) -> dict[str, Any]:
    """Export (OpenVINO), load and time one variant; medians of `runs` streamed calls after one untimed call."""
    from bench_generation import one_run, sized_prompt
    from common import sample_chunks, sample_questions

    from chatbot.core.config import Settings
    from chatbot.llm.loading import load_generator
    from chatbot.llm.local import build_chat_model

    settings = Settings(llm_model=str(folder), cache_dir=cache, llm_runtime=runtime, llm_weights=weights)
    export_seconds = ir_bytes = None
    started = time.perf_counter()
    if runtime == "openvino":
        from chatbot.llm.ov_export import ensure_export
        from chatbot.llm.ov_runtime import build_openvino_chat_model

        exported, export_seconds = ensure_export(cache, folder, weights)  # the one-off export, in a grandchild
        ir_bytes = sum(path.stat().st_size for path in exported.glob("*.bin"))
        started = time.perf_counter()
        chat, _ = build_openvino_chat_model(settings, [], {}, max_new_tokens=max_new)
    else:
        chat = build_chat_model(load_generator(settings), max_new_tokens=max_new)
    load_seconds = time.perf_counter() - started
    messages = sized_prompt(chat, PROMPT_TOKENS, sample_questions(1)[0], sample_chunks())
    one_run(chat, messages)  # warm-up: first-call allocations and compilation
    results = [one_run(chat, messages) for _ in range(runs)]
    ttft, rate, tokens, _ = (statistics.median(column) for column in zip(*results, strict=True))
    return {
        "export_seconds": export_seconds,
        "ir_bytes": ir_bytes,
        "load_seconds": load_seconds,
        "prompt_tokens": chat.count_tokens(messages),
        "output_tokens": tokens,
        "ttft": ttft,
        "rate": rate,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
        "export_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 if export_seconds else None,
    }


def child_main(argv: list[str]) -> None:
    """`--child build FOLDER SHAPE_JSON` or `--child measure FOLDER CACHE RUNTIME WEIGHTS MAX_NEW RUNS`."""
    kind, folder, *rest = argv
    if kind == "build":
        result = build_model(Path(folder), json.loads(rest[0]))
    else:
        cache, runtime, weights, max_new, runs = rest
        result = measure(Path(folder), Path(cache), runtime, weights, int(max_new), int(runs))
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent's side -----------------------------------------------------------------------------


def in_child(*args: str) -> dict[str, Any]:
    """Run this script's child side with `args`; the result it prints, or its error's last line."""
    command = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    print(done.stderr, end="", file=sys.stderr, flush=True)
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not found:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        return {"error": f"exit code {done.returncode}: {lines[-1] if lines else 'no message'}"}
    return json.loads(found[-1].removeprefix("RESULT "))


def available_gib() -> float:
    """MemAvailable in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def estimated_parameters(shape: dict[str, int]) -> int:
    """Parameters of a tied-embedding Llama with `shape` (to check memory before building it)."""
    hidden, layers = shape["hidden_size"], shape["num_hidden_layers"]
    kv = hidden // shape["num_attention_heads"] * shape["num_key_value_heads"]
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * shape["intermediate_size"] + 2 * hidden
    return VOCAB * hidden + layers * per_layer + hidden


def bench_model(label: str, shape: dict[str, int], max_new: int, runs: int) -> tuple[list[list[str]], str]:
    """The table rows of one model's variants, and a note (its size, or why it was skipped)."""
    need = estimated_parameters(shape) * 4 * MEMORY_FACTOR / 2**30
    if available_gib() < need:
        return [], f"{label}: skipped, {available_gib():.1f} GiB available and its export needs ~{need:.0f} GiB."
    with tempfile.TemporaryDirectory(prefix="ragtune-bigmodel-") as temp:
        folder, cache = Path(temp) / "model", Path(temp) / "cache"
        print(f"building {label}...", flush=True)
        built = in_child("build", str(folder), json.dumps(shape))
        if "error" in built:
            return [], f"{label}: building it failed ({built['error']})."
        measured = {}
        for runtime, weights in VARIANTS:
            print(f"{label}: {runtime} {weights}...", flush=True)
            measured[(runtime, weights)] = in_child(
                "measure", str(folder), str(cache), runtime, weights, str(max_new), str(runs)
            )
    count = built["parameters"]
    name = f"{label}, {count / 1e9:.2f}B" if count >= 1e8 else f"{label}, {count / 1e6:.1f}M"
    note = f"{name}: {count:,} parameters, built and saved in {built['build_seconds']:.0f} s."
    f32, int8 = (measured[("openvino", weights)].get("ir_bytes") for weights in ("f32", "int8"))
    if f32 and int8 and int8 > f32 / 2:  # int8 weights take a quarter of f32's bytes
        note += (
            f" The int8 export's weights file is {int8 / f32:.0%} the size of the f32 one: it was not quantised, "
            "so its row measures f32 weights."
        )
    return [row(name, key, value, measured[VARIANTS[0]]) for key, value in measured.items()], note


def row(name: str, variant: tuple[str, str], result: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """One table row; ratios against the transformers f32 row of the same model."""
    if "error" in result:
        return [name, *variant, f"FAILED ({result['error']})", *[""] * (len(HEADERS) - 4)]
    gib = 2**30
    ratios = ["", ""]
    if "error" not in base:
        ratios = [f"{result['ttft'] / base['ttft']:.2f}x", f"{result['rate'] / base['rate']:.2f}x"]
    if result is base:
        ratios = ["1.00x (baseline)", "1.00x (baseline)"]
    export = "-" if result["export_seconds"] is None else f"{result['export_seconds']:.0f}"
    export_rss = "-" if result["export_rss"] is None else f"{result['export_rss'] / gib:.1f}"
    return [
        name,
        *variant,
        export,
        "-" if result["ir_bytes"] is None else f"{result['ir_bytes'] / gib:.2f}",
        f"{result['load_seconds']:.1f}",
        str(result["prompt_tokens"]),
        f"{result['output_tokens']:.0f}",
        f"{result['ttft'] * 1e3:.0f}",
        f"{result['rate']:.1f}",
        *ratios,
        f"{result['rss'] / gib:.1f}",
        export_rss,
    ]


def main() -> None:
    args = parse_args("Decode speed of ~0.5B and ~1.5B random-weight Llama models on transformers and OpenVINO.")
    max_new, runs = (16, 1) if args.quick else (32, 3)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    machine = machine_line()  # the load average before this benchmark's own work
    started = time.perf_counter()
    rows, notes = [], []
    for label, shape in shapes.items():
        model_rows, note = bench_model(label, shape, max_new, runs)
        rows += model_rows
        notes.append(f"- {note}")
    lines = [
        "## Bigger local models: ~0.5B and ~1.5B on transformers and OpenVINO",
        "",
        f"Machine: {machine}; load avg at the end {os.getloadavg()[0]:.2f}.",
        "",
        "Random-weight Llama models built in-process (`LlamaConfig` + `LlamaForCausalLM`, seed 0, f32 weights, "
        "tied embeddings, max_position_embeddings 2048) with the layer shapes of Qwen2.5-0.5B (hidden 896, "
        "intermediate 4864, 24 layers, 14 heads, 2 KV heads) and SmolLM2-1.7B (hidden 2048, intermediate 8192, "
        "24 layers, 32 heads, 32 KV heads), saved with the bundled SmolLM2 tokenizer: the vocabulary is "
        f"SmolLM2's {VOCAB:,}, so the ~0.5B model's embedding is smaller than Qwen2.5's (151,936 tokens). "
        "Speed does not depend on what the weights say. Each variant runs in its own process, loaded as the "
        "app loads `RAG_LLM_MODEL`: transformers f32, and OpenVINO GenAI with f32 or int8 weights "
        "(exported once, in a child process: export s, its peak RSS, and the size of the IR's weights file, "
        "which shows whether int8 weights were written: int8 is about a quarter of f32). "
        f"A ~{PROMPT_TOKENS}-token RAG prompt of sample-KB passages, greedy, max_new_tokens={max_new}, "
        f"median of {runs} run(s) after one untimed run; TTFT and decode tok/s = (output tokens - 1) / "
        "(total - TTFT) from the stream's last chunk, as in the generation benchmark. The end tokens' "
        "embedding rows are zeroed (tied, so their logit is always 0, below the largest random one): greedy "
        "decoding never stops early, and output tok shows it. Peak RSS is the "
        "variant's process (`ru_maxrss`). Ratios are against transformers f32 of the same model in the "
        "same run; variants run one after another, not interleaved.",
        "",
        table(HEADERS, rows) if rows else "No model could be measured.",
        "",
        *notes,
        f"- Wall time {(time.perf_counter() - started) / 60:.1f} min.",
        f"- {SHARED_NOTE}",
    ]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
    else:
        main()
