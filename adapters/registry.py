"""The adapter registry: which LoRA adapters exist, read from their folders without loading a model.

An adapter is a standard PEFT folder (`adapter_config.json` + `adapter_model.safetensors`)
plus a small card, `ragtune.json`, that says how it was made and what it measured. The
registry searches the shipped adapters (`data/adapters/`) and then the user folder
(`RAG_ADAPTERS_DIR`); a user adapter with a shipped one's name replaces it, so a
re-trained copy wins. Listing reads two small JSON files per folder, never the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.card import AdapterCard
from chatbot.core.config import Settings
from chatbot.core.errors import AdapterCardError, AdapterNotFoundError

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "adapters"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class Adapter:
    """A registered adapter folder: its name, where it is, its card and the base model it was trained on."""

    name: str
    path: Path
    base_model: str
    card: AdapterCard = field(default_factory=AdapterCard)
    error: str | None = None  # the folder could not be read: listed, never loaded

    def problem_with(self, base_model: str) -> str | None:
        """Why this adapter cannot go on `base_model`, or None if it can."""
        if self.error:
            return self.error
        if _same_model(self.base_model, base_model):
            return None
        return (
            f"adapter {self.name!r} was trained on {self.base_model}, but the loaded model is {base_model}: "
            "re-train it on this model with rag-train-adapter, or load its base model (RAG_LLM_MODEL)."
        )


def adapter_dirs(settings: Settings) -> list[Path]:
    """Where adapters are searched, in order (a later folder's adapter replaces an earlier one's)."""
    dirs = [SHIPPED_DIR, settings.adapters_dir]
    return list(dict.fromkeys(path.resolve() for path in dirs))


def discover(dirs: list[Path]) -> list[Adapter]:
    """Every adapter folder directly under `dirs`, by name; folders without weights are not adapters."""
    found: dict[str, Adapter] = {}
    for root in dirs:
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
                try:
                    adapter = read_adapter(folder)
                except AdapterCardError as error:  # one broken folder must not hide the others
                    adapter = Adapter(folder.name, folder, "unknown", error=str(error))
                found[adapter.name] = adapter
    return sorted(found.values(), key=lambda adapter: adapter.name)


def read_adapter(folder: Path) -> Adapter:
    """The adapter in `folder` (its card is optional: a plain PEFT folder registers too)."""
    config = _read_json(folder / CONFIG_FILE)
    card = AdapterCard.read(folder)
    base = card.base_model or config.get("base_model_name_or_path") or "unknown"
    return Adapter(name=card.name or folder.name, path=folder, base_model=str(base), card=card)


def find(adapters: list[Adapter], name: str) -> Adapter:
    """The adapter called `name`, or an error listing the ones there are."""
    for adapter in adapters:
        if adapter.name == name:
            return adapter
    names = ", ".join(repr(adapter.name) for adapter in adapters) or "none"
    raise AdapterNotFoundError(
        f"No adapter named {name!r} is registered (found: {names}). Train one with "
        "`rag-train-adapter PAIRS.jsonl --name NAME`, or put a PEFT folder in RAG_ADAPTERS_DIR."
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterCardError(
            f"{path} cannot be read as JSON ({error}): fix or remove that adapter folder."
        ) from error
    if not isinstance(data, dict):
        raise AdapterCardError(f"{path} holds {type(data).__name__}, not an object: fix or remove that folder.")
    return data


def _same_model(left: str, right: str) -> bool:
    # A card may name a hub id and the engine a local folder of the same model: compare the last part.
    return left.rstrip("/").rsplit("/", 1)[-1].lower() == right.rstrip("/").rsplit("/", 1)[-1].lower()


@dataclass(frozen=True)
class AdapterInfo:
    """A registered LoRA adapter: its card, and whether it is loaded (if not, `problem` says why)."""

    name: str
    card: AdapterCard = field(default_factory=AdapterCard)
    path: str | None = None
    loaded: bool = True
    problem: str | None = None
    served: bool = False  # on the served model next to a local one: ask it with `served=True`
