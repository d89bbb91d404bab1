"""Model load times: the generator's first-run GGUF conversion against a load from the converted cache.

The bundled SmolLM2 ships as a GGUF file, and dequantising it is slow on a small
CPU, so `ensure_generator_cache` converts it once to a safetensors folder and every
later start reads that. This measures whether the cache pays: the conversion
(`convert_gguf`, the one-off first-run cost) against `load_generator` from the cache
(the cost of every later start), and the embedding model's load for scale. Imports
of torch/transformers are timed on their own and excluded from every other row.
All caches live in a temp folder, so the project's own `.ragtune/cache` is untouched.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
from pathlib import Path
from typing import Any

from common import SHARED_NOTE, emit, machine_line, parse_args, table, timed

from chatbot.core.config import Settings
from chatbot.llm.loading import bundled_gguf_path, convert_gguf, generator_cache_dir, load_embeddings, load_generator

HEADERS = ("step", "seconds", "vs cached generator load")


def import_heavy() -> None:
    """Import what every load needs, so the loads below measure loading alone."""
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from langchain_huggingface import HuggingFaceEmbeddings  # noqa: F401


def gguf_model_only(gguf: Path) -> Any:
    """Dequantise the GGUF weights into memory: one part of the conversion."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


def gguf_tokenizer_only(gguf: Path) -> Any:
    """Rebuild the tokenizer from the GGUF vocabulary: the other part of the conversion."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


def best_and_median(function: Any, *args: Any, repeats: int) -> tuple[float, float]:
    """Best and median wall seconds of `repeats` calls, freeing each result before the next."""
    seconds = []
    for _ in range(repeats):
        result, elapsed = timed(function, *args)
        del result
        gc.collect()
        seconds.append(elapsed)
    return min(seconds), statistics.median(seconds)


def main() -> None:
    args = parse_args("Generator and embedding model load times.")
    repeats = 1 if args.quick else 3
    _, t_import = timed(import_heavy)
    gguf = bundled_gguf_path()
    print(f"imports {t_import:.2f} s; converting {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB)...", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        settings = Settings(cache_dir=Path(folder))
        target = generator_cache_dir(settings, gguf)
        _, t_convert = timed(convert_gguf, gguf, target)
        if not (target / "config.json").is_file():
            raise RuntimeError(f"convert_gguf left no config.json in {target}")
        print(f"convert {t_convert:.2f} s; loading from the cache x{repeats}...", flush=True)
        cached_best, cached_median = best_and_median(load_generator, settings, repeats=repeats)
    parts = {}
    if not args.quick:  # where the conversion's time goes
        print("GGUF model and tokenizer loads on their own...", flush=True)
        parts["GGUF weights dequantised into memory"] = best_and_median(gguf_model_only, gguf, repeats=1)[0]
        parts["tokenizer rebuilt from the GGUF"] = best_and_median(gguf_tokenizer_only, gguf, repeats=1)[0]
    print(f"embedding model load x{repeats}...", flush=True)
    torch_route = Settings(embed_backend="torch")  # the torch load, for scale; bench_embed.py has the OpenVINO one
    embed_best, embed_median = best_and_median(load_embeddings, torch_route, repeats=repeats)

    def ratio(seconds: float) -> str:
        return f"{seconds / cached_best:.1f}x"

    rows = [
        ["import torch, transformers, sentence-transformers, langchain-huggingface", f"{t_import:.2f}", "(excluded)"],
        ["generator: GGUF -> cache, `convert_gguf` (first run only)", f"{t_convert:.2f}", ratio(t_convert)],
    ]
    rows += [[f"generator: part of convert: {part}", f"{value:.2f}", ratio(value)] for part, value in parts.items()]
    rows += [
        [f"**generator: `load_generator` from cache** (best of {repeats})", f"{cached_best:.2f}", "1.0x"],
        [f"generator: `load_generator` from cache (median of {repeats})", f"{cached_median:.2f}", ratio(cached_median)],
        [f"embeddings: `load_embeddings` (best of {repeats})", f"{embed_best:.2f}", ratio(embed_best)],
        [f"embeddings: `load_embeddings` (median of {repeats})", f"{embed_median:.2f}", ratio(embed_median)],
    ]
    lines = [
        "## Model load",
        "",
        f"Machine: {machine_line()}.",
        "",
        table(HEADERS, rows),
        "",
        f"- The converted cache makes every start after the first {t_convert / cached_best:.0f}x cheaper "
        f"({t_convert:.1f} s once, then {cached_best:.2f} s).",
        "- Cached loads read files the conversion just wrote, so they are page-cache warm; a cold disk adds read time.",
        f"- {SHARED_NOTE}",
    ]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
