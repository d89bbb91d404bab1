"""The generator exported once to OpenVINO IR, the form the OpenVINO GenAI runtime reads.

optimum-intel does the export: it knows how to trace each architecture with its KV cache and
make the model stateful, which `LLMPipeline` needs. It pins transformers below 5.6, older than
the one ragtune runs (whose GGUF reader the bundled model's conversion needs), so the export
runs in a child process with optimum-intel's own transformers first on its path: `make setup`
installs it into `EXPORT_LIBS` (see the Makefile). The child also keeps torch and the tracing's
memory out of the app's process.

Like the GGUF conversion, the export happens once: keyed by the source folder's files and the
weights' precision, written to a staging folder and renamed into `RAG_CACHE_DIR`, so a killed
export never looks finished and two concurrent ones leave one folder.

Run as `python -m chatbot.llm.ov_export SOURCE TARGET --weights f32|int8` (the child's side).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from chatbot.core.errors import LoadError
from chatbot.core.files import atomic_folder, files_fingerprint

FORMAT = 2  # bump when the exported folder's layout changes: old exports are then ignored (2: int8 is int8)
EXPORT_LIBS = Path(sys.prefix) / "optimum-export"  # optimum-intel's transformers, apart from the app's
META = "ragtune_export.json"
MODEL_FILES = (".safetensors", ".bin", ".json", ".jinja", ".model", ".txt")  # weights, config, tokenizer


def export_dir(cache_dir: Path, source: Path, weights: str) -> Path:
    """Where the export of `source` with `weights` lives: a new folder whenever its files change."""
    files = files_fingerprint(source, MODEL_FILES)
    key = hashlib.sha256(json.dumps([FORMAT, str(source.resolve()), weights, files]).encode()).hexdigest()[:12]
    return cache_dir / "openvino" / f"{source.name.lower()}-{weights}-{key}"


def ensure_export(cache_dir: Path, source: Path, weights: str) -> tuple[Path, float | None]:
    """Export `source` once; return the folder and the seconds spent (None when it was there already)."""
    target = export_dir(cache_dir, source, weights)
    if (target / META).is_file():
        return target, None
    if not (EXPORT_LIBS / "transformers").is_dir():
        raise LoadError(
            f"The OpenVINO export needs optimum-intel's transformers in {EXPORT_LIBS}, which is missing: run "
            "`make setup`, or set RAG_LLM_RUNTIME=transformers."
        )
    print(f"ragtune: exporting {source.name} to OpenVINO ({weights} weights), once: 20-40 s", file=sys.stderr)
    started = time.perf_counter()
    with atomic_folder(target, keep_existing=True) as staging:  # two concurrent exports: one stays
        _run_child(source, staging, weights)
    seconds = time.perf_counter() - started
    print(f"ragtune: exported to {target} in {seconds:.0f} s", file=sys.stderr)
    return target, seconds


def _run_child(source: Path, staging: Path, weights: str) -> None:
    path = os.pathsep.join([str(EXPORT_LIBS), *filter(None, [os.environ.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "chatbot.llm.ov_export", str(source), str(staging), "--weights", weights]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise LoadError(
            f"OpenVINO could not export {source} ({lines[-1] if lines else f'exit code {done.returncode}'}): "
            "set RAG_LLM_RUNTIME=transformers to run it with transformers."
        )


def export(source: Path, target: Path, weights: str) -> None:
    """The export itself (in the child): optimum-intel's IR, f32 or int8 weights, and a record of what it is."""
    import warnings

    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes about branches that do not depend on the input
        main_export(
            str(source),
            output=target,
            task="text-generation-with-past",
            library_name="transformers",
            local_files_only=True,
            convert_tokenizer=False,  # ragtune tokenizes with the model's own tokenizer and passes ids
            # f32 explicitly: left unset, optimum-intel quietly makes models over 1B parameters int8.
            ov_config=OVConfig(dtype="fp32"),
        )
    if weights == "int8":
        _compress_to_int8(target / "openvino_model.xml")
    record = {"format": FORMAT, "source": str(source), "weights": weights}
    (target / META).write_text(json.dumps(record, indent=2, sort_keys=True))


def _compress_to_int8(xml: Path) -> None:
    # main_export given a quantization config skips it (optimum-cli applies it in a step of its own), so
    # the weights are compressed here: 8-bit per channel, asymmetric, as optimum-intel does for big models.
    import nncf
    import openvino as ov

    model = nncf.compress_weights(ov.Core().read_model(xml), mode=nncf.CompressWeightsMode.INT8_ASYM)
    staged = xml.with_name("int8.xml")
    ov.save_model(model, staged, compress_to_fp16=False)
    staged.with_suffix(".bin").replace(xml.with_suffix(".bin"))
    staged.replace(xml)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a causal LM folder to OpenVINO IR (run by ragtune).")
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--weights", choices=("f32", "int8"), default="f32")
    args = parser.parse_args(argv)
    export(args.source, args.target, args.weights)


if __name__ == "__main__":
    main()
