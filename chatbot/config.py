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
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

from chatbot.errors import SettingsError

PREFIX = "RAG_"
TOP_K_RANGE = (1, 50)
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Settings:
    """Everything configurable about ragtune; `Settings.from_env()` builds it from `RAG_*`."""

    qdrant_path: Path = Path(".ragtune/qdrant")
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    collection: str = "kb"
    embed_model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    llm_model: str | None = None  # None: the bundled SmolLM2-135M-Instruct GGUF
    llm_base_url: str | None = None
    adapters_dir: Path = Path(".ragtune/adapters")
    cache_dir: Path = Path(".ragtune/cache")
    top_k: int = 4

    def __post_init__(self) -> None:
        low, high = TOP_K_RANGE
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or not low <= self.top_k <= high:
            _fail("top_k", self.top_k, f"a whole number from {low} to {high}")
        if not _COLLECTION_NAME.match(self.collection):
            _fail("collection", self.collection, "1-64 letters, digits, '_' or '-'")
        for name in ("qdrant_url", "llm_base_url"):
            value = getattr(self, name)
            if value is not None and not _is_http_url(value):
                _fail(name, value, "an http:// or https:// URL such as http://localhost:6333")
        if self.qdrant_api_key and not self.qdrant_url:
            _fail("qdrant_api_key", "***", "only together with RAG_QDRANT_URL (local mode has no key)")
        for name in ("embed_model", "llm_model"):
            value = getattr(self, name)
            if value is not None and _looks_like_path(value) and not Path(value).expanduser().is_dir():
                _fail(
                    name,
                    value,
                    "an existing local model directory, or a model id already in the local Hugging Face cache",
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
            if field.name == "top_k":
                try:
                    values["top_k"] = int(raw)
                except ValueError:
                    _fail("top_k", raw, f"a whole number from {TOP_K_RANGE[0]} to {TOP_K_RANGE[1]}")
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
            shown[env_name(field.name)] = "" if value is None else str(value)
        return shown


def env_name(field_name: str) -> str:
    """The environment variable that sets a field, e.g. `top_k` -> `RAG_TOP_K`."""
    return PREFIX + field_name.upper()


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
