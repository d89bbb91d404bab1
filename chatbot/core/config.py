"""Settings: read once from `RAG_*` environment variables, validated, then passed down.

This is the only module that reads the environment. A bad value fails at once with
a message naming the variable, the value and what is allowed, so a typo never
surfaces later as a crash deep inside Qdrant or transformers.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import urlparse

from chatbot.core.errors import SettingsError

PREFIX = "RAG_"
TOP_K_RANGE = (1, 50)
# Whole-number settings and their ranges; a served model's window is read from the server when unset.
_WHOLE_NUMBERS = {
    "top_k": TOP_K_RANGE,
    "qdrant_shards": (1, 256),
    "qdrant_replicas": (1, 16),
    "llm_context_window": (256, 10_000_000),
}
LLM_TIMEOUT_RANGE = (0.1, 3600.0)
_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
EMBED_BACKENDS = ("openvino", "torch")
QDRANT_ENGINES = ("edge", "local")  # in-process engine for RAG_QDRANT_PATH when no RAG_QDRANT_URL is set
LLM_RUNTIMES = ("openvino", "transformers")
LLM_WEIGHTS = ("f32", "int8")
# Settings that take one of a few words (matched case-insensitively).
_CHOICES = {
    "embed_backend": EMBED_BACKENDS,
    "qdrant_engine": QDRANT_ENGINES,
    "llm_runtime": LLM_RUNTIMES,
    "llm_weights": LLM_WEIGHTS,
}
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A URL's user:password (up to its last "@", so a raw "@" or "/" in a password hides too), also with no scheme,
# and the values of query parameters that carry keys.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://|^)\S*@")
_SECRET_QUERY = re.compile(r"([?&](?:api[_-]?key|key|token|access_token|secret|password|sig|signature)=)[^&#\s]*", re.I)
_URLS = ("qdrant_url", "llm_base_url")


@dataclass(frozen=True)
class Settings:
    """Everything configurable about ragtune; `Settings.from_env()` builds it from `RAG_*`."""

    qdrant_path: Path = Path(".ragtune/qdrant")
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_engine: str = "edge"  # what keeps RAG_QDRANT_PATH: "edge" (Qdrant Edge, HNSW) or "local" (qdrant-client)
    collection: str = "kb"
    embed_model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    embed_backend: str = "openvino"  # what runs it: "openvino" (no torch, falls back to torch) or "torch"
    llm_model: str | None = None  # None: the bundled SmolLM2-135M-Instruct GGUF
    llm_runtime: str = "openvino"  # runs the local generator: "openvino" (falls back to transformers) or "transformers"
    llm_weights: str = "f32"  # the OpenVINO export's weights: "f32" (the transformers runtime's text) or "int8"
    llm_base_url: str | None = None  # an OpenAI-compatible server: then llm_model is the *served* base model name
    llm_api_key: str | None = None
    llm_timeout: float = 60.0  # seconds llm_base_url may take to start an answer, retries included
    llm_context_window: int | None = None  # None: the server's max_model_len, else 4096
    llm_tokenizer: str | None = None  # a local tokenizer folder for the served model (None: the estimate)
    local_llm: str | None = None  # with llm_base_url: also load a local generator ("1" = bundled, or a folder)
    qdrant_shards: int | None = None  # None: the server's default (1)
    qdrant_replicas: int | None = None
    adapters_dir: Path = Path(".ragtune/adapters")
    cache_dir: Path = Path(".ragtune/cache")
    top_k: int = 4
    product: str | None = None  # the product the prompts name (None: the one in the few-shot examples file)

    def __post_init__(self) -> None:
        for name, (low, high) in _WHOLE_NUMBERS.items():
            value = getattr(self, name)
            if value is None and name != "top_k":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                _fail(name, value, f"a whole number from {low} to {high}")
        timeout, (low, high) = self.llm_timeout, LLM_TIMEOUT_RANGE
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not low <= timeout <= high:
            shown = f"{timeout:g}" if isinstance(timeout, float) else timeout  # "0", as it was written
            _fail("llm_timeout", shown, f"seconds, a number from {low:g} to {high:g}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                _fail(name, getattr(self, name), " or ".join(choices))
        if not _COLLECTION_NAME.match(self.collection):
            _fail("collection", self.collection, "1-64 letters, digits, '_' or '-'")
        for name in _URLS:
            value = getattr(self, name)
            if value is not None and not _is_http_url(value):
                _fail(name, redact_url(value), "an http:// or https:// URL such as http://localhost:6333")
        for name in ("qdrant_api_key", "qdrant_shards", "qdrant_replicas"):
            if getattr(self, name) is not None and not self.qdrant_url:
                shown = "***" if name.endswith("api_key") else getattr(self, name)
                _fail(name, shown, "only together with RAG_QDRANT_URL (local mode is one unsharded folder)")
        for name in ("llm_api_key", "llm_context_window", "llm_tokenizer", "local_llm"):
            if getattr(self, name) is not None and not self.llm_base_url:
                shown = "***" if name.endswith("api_key") else getattr(self, name)
                _fail(name, shown, "only together with RAG_LLM_BASE_URL (it configures the served model)")
        # With a server, RAG_LLM_MODEL is the name the server knows its model by, not a folder here.
        folders = ["embed_model", "llm_tokenizer"] + ([] if self.llm_base_url else ["llm_model"])
        if self.local_llm is not None and self.local_llm.lower() not in _YES:
            folders.append("local_llm")
        for name in folders:
            value = getattr(self, name)
            if value is not None and _looks_like_path(value) and not Path(value).expanduser().is_dir():
                _fail(
                    name,
                    value,
                    "an existing local model directory, or a model id already in the local Hugging Face cache",
                )

    @property
    def local_llm_model(self) -> str | None:
        """The local generator to load next to a served one: None for the bundled SmolLM2, else a folder or id."""
        return None if self.local_llm is None or self.local_llm.lower() in _YES else self.local_llm

    def local_side(self) -> Settings:
        """The settings for the local generator loaded next to a served one (`RAG_LOCAL_LLM`)."""
        return replace(
            self,
            llm_model=self.local_llm_model,
            llm_base_url=None,
            llm_api_key=None,
            llm_context_window=None,
            llm_tokenizer=None,
            local_llm=None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `RAG_*` variables (empty values count as unset)."""
        environ = os.environ if environ is None else environ
        _reject_misspelled(environ)
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = environ.get(env_name(field.name), "").strip()
            if not raw:
                continue
            if field.name in _WHOLE_NUMBERS:
                low, high = _WHOLE_NUMBERS[field.name]
                try:
                    values[field.name] = int(raw)
                except ValueError:
                    _fail(field.name, raw, f"a whole number from {low} to {high}")
            elif field.name == "llm_timeout":
                try:
                    values[field.name] = float(raw)
                except ValueError:
                    low, high = LLM_TIMEOUT_RANGE
                    _fail(field.name, raw, f"seconds, a number from {low:g} to {high:g}")
            elif field.name in _CHOICES:
                values[field.name] = raw.lower()
            elif field.name == "local_llm" and raw.lower() in _NO:
                continue  # "0" turns it off, like leaving it unset
            elif isinstance(field.default, Path):
                values[field.name] = Path(raw).expanduser()
            else:
                values[field.name] = raw
        return cls(**values)

    def describe(self) -> dict[str, str]:
        """The settings as `RAG_*` names and printable values (secrets masked)."""
        shown = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("api_key") and value:
                value = "***"
            elif field.name in _URLS and value:
                value = redact_url(value)
            shown[env_name(field.name)] = "" if value is None else str(value)
        return shown


def env_name(field_name: str) -> str:
    """The environment variable that sets a field, e.g. `top_k` -> `RAG_TOP_K`."""
    return PREFIX + field_name.upper()


def redact_url(url: str) -> str:
    """`url` with the credentials it carries masked, for messages and logs: http://***@host/v1."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def _fail(field_name: str, value: object, allowed: str) -> None:
    raise SettingsError(f"{env_name(field_name)}={value!s} is not allowed: expected {allowed}.")


def _is_http_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _looks_like_path(value: str) -> bool:
    # "org/name" is a Hugging Face id; anything anchored to the filesystem is a path.
    return value.startswith(("/", ".", "~")) or value.count("/") > 1 or Path(value).exists()


def _reject_misspelled(environ: Mapping[str, str]) -> None:
    # Other tools may use RAG_* too, so only near-misses of our own names are errors.
    known = [env_name(f.name) for f in fields(Settings)]
    for name in environ:
        if name.startswith(PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
            if close:
                raise SettingsError(f"{name} is not a ragtune setting: did you mean {close[0]}?")
