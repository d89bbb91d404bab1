"""Put registered adapters on a loaded base model, and merge one into a plain model folder.

All adapters that fit the base model go on one `PeftModel`, loaded once: each call then
picks one with `set_adapter` or none with `disable_adapter()`, without a reload or a copy
of the base weights (a rank-16 LoRA on SmolLM2-135M is ~5 MB next to ~540 MB of base).
An adapter that does not fit (another base model, an unreadable folder, mismatched shapes)
is left off and reported, so one bad folder never takes the others down.

peft and torch are imported inside the functions: listing adapters must stay cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.registry import Adapter
from chatbot.core.errors import OutputExistsError, first_line
from chatbot.core.files import atomic_folder


def attach(model: Any, adapters: list[Adapter], base_model: str) -> tuple[Any, dict[str, str]]:
    """`model` wrapped in one PeftModel with every fitting adapter loaded, and why the others were not."""
    from peft import PeftModel  # imports torch

    problems: dict[str, str] = {}
    for adapter in adapters:
        if problem := adapter.problem_with(base_model):
            problems[adapter.name] = problem
            continue
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(str(adapter.path), adapter_name=adapter.name, is_trainable=False)
            else:
                model = PeftModel.from_pretrained(model, str(adapter.path), adapter_name=adapter.name)
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            if isinstance(model, PeftModel) and adapter.name in model.peft_config:
                model.delete_adapter(adapter.name)  # do not keep a half-loaded adapter
            problems[adapter.name] = (
                f"adapter {adapter.name!r} in {adapter.path} could not be loaded ({first_line(error)}): "
                "re-train it on this model, or remove the folder."
            )
    if isinstance(model, PeftModel):
        model.eval()
    return model, problems


def merge(model: Any, tokenizer: Any, adapter: Adapter, target: Path) -> Path:
    """Write `model` with `adapter` merged into its weights as a plain transformers folder at `target`."""
    from peft import PeftModel  # imports torch

    if target.exists() and any(target.iterdir()):
        raise OutputExistsError(f"{target} is not empty: pick a new folder for the merged model.")
    merged = PeftModel.from_pretrained(model, str(adapter.path)).merge_and_unload()
    with atomic_folder(target) as staging:  # a failed export never looks like a complete model
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target
