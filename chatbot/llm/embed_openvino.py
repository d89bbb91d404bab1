"""The embedding model run by the OpenVINO runtime, with no torch in the process.

`rag-search` spent most of its cold start importing torch and sentence-transformers
to embed one query. Here the sentence-transformers model (transformer, pooling and
normalisation together) is traced once into an OpenVINO IR under `RAG_CACHE_DIR`,
next to the exact Rust tokenizer it used; later processes load only `openvino`,
`tokenizers` and numpy. The export (which does import torch) is keyed by the
model folder's weight files, written atomically, and reused by every process after.
Vectors match the torch ones to cosine > 0.9999: weights stay fp32 and inference is
pinned to f32 (OpenVINO would otherwise pick bf16 on CPUs that have it).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov  # ~0.2 s; importing this module is how loading.py learns whether OpenVINO is installed
from langchain_core.embeddings import Embeddings

from chatbot.core.files import atomic_folder, files_fingerprint

FORMAT = 1  # bump when the exported folder's layout changes: old caches are then ignored
BATCH = 32  # sentence-transformers' default batch, so ingest pads no more than it did
_MODEL_FILES = (".safetensors", ".bin", ".json", ".txt", ".model")  # weights, config, vocab


def export_dir(cache_dir: Path, model_path: Path) -> Path:
    """Where the export of `model_path` lives: a new folder whenever its weight or config files change."""
    files = files_fingerprint(model_path, _MODEL_FILES, recursive=True)
    key = hashlib.sha256(json.dumps([FORMAT, str(model_path.resolve()), files]).encode()).hexdigest()[:12]
    return cache_dir / "embeddings" / f"{model_path.name.lower()}-openvino-{key}"


def is_exported(cache_dir: Path, model_path: Path) -> Path | None:
    """The finished export of `model_path`, or None when there is none yet."""
    target = export_dir(cache_dir, model_path)
    return target if (target / "meta.json").is_file() else None


def ensure_export(cache_dir: Path, model_path: Path) -> tuple[Path, bool]:
    """Export `model_path` once; return the folder and whether this call wrote it."""
    target = export_dir(cache_dir, model_path)
    if (target / "meta.json").is_file():
        return target, False
    with atomic_folder(target, keep_existing=True) as staging:  # two concurrent exports: one stays
        _export(model_path, staging)
    return target, True


def _export(model_path: Path, folder: Path) -> None:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a one-off step: transformers' notes about config fields are noise here
    try:
        _trace_and_save(model_path, folder)
    finally:
        hf_logging.set_verbosity(verbosity)


def _trace_and_save(model_path: Path, folder: Path) -> None:
    import torch  # only the one-off export needs torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    model.eval()
    tokenizer = model.tokenizer
    names = ["input_ids", "attention_mask"] + (
        ["token_type_ids"] if "token_type_ids" in tokenizer.model_input_names else []
    )
    # A padded row in the example, so the trace keeps the attention mask's path through the model.
    example = {name: torch.ones((2, 8), dtype=torch.int64) for name in names}
    example["attention_mask"][1, 5:] = 0

    class Whole(torch.nn.Module):
        # The whole sentence-transformers pipeline (pooling included, whatever the folder configures), normalised.
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                features["token_type_ids"] = token_type_ids
            return torch.nn.functional.normalize(self.inner(features)["sentence_embedding"], dim=-1)

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about branches that do not depend on the input here
        converted = ov.convert_model(Whole(), example_input=example)
    ov.save_model(converted, folder / "model.xml", compress_to_fp16=False)
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    meta = {
        "format": FORMAT,
        "source": str(model_path),
        "inputs": names,
        "max_seq_length": model.max_seq_length,
        "pad_id": tokenizer.pad_token_id or 0,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


@dataclass(frozen=True)
class OpenVinoEmbeddings(Embeddings):
    """A LangChain `Embeddings` over an exported folder: normalised vectors, batched like sentence-transformers."""

    folder: Path
    compiled: Any
    tokenizer: Any
    inputs: tuple[str, ...]

    @classmethod
    def load(cls, folder: Path) -> OpenVinoEmbeddings:
        from tokenizers import Tokenizer

        meta = json.loads((folder / "meta.json").read_text())
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(meta["max_seq_length"])
        tokenizer.enable_padding(pad_id=meta["pad_id"])
        compiled = ov.Core().compile_model(folder / "model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return cls(folder=folder, compiled=compiled, tokenizer=tokenizer, inputs=tuple(meta["inputs"]))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        # Longest first, as sentence-transformers does, so each batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            for index, vector in zip(batch, self._encode([texts[i] for i in batch]), strict=True):
                vectors[index] = vector.tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text])[0].tolist()

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        # A request per call: `compiled(...)` shares one, and the UI's sessions embed from several threads.
        result = self.compiled.create_infer_request().infer({name: arrays[name] for name in self.inputs})
        return np.array(result[0], dtype=np.float32)  # a copy: the request's buffer goes with it
