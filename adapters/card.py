"""An adapter's card (`ragtune.json`): how it was made, what it measured, and how it decodes.

PEFT's `adapter_config.json` says what the adapter *is*; the card says what ragtune needs
beyond that. It is validated once, when read, so every reader gets typed fields instead
of `.get` on a dict. Keys this version does not know (an evaluation summary, a loss
curve) are kept as written under `extra`, so reading and re-writing a card loses nothing.
The file is sorted JSON with a `format` number, like PEFT's own config.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from chatbot.core.errors import AdapterCardError
from chatbot.core.files import atomic_write_text

CARD_FILE = "ragtune.json"
CARD_FORMAT = 1


@dataclass(frozen=True)
class AdapterCard:
    """What ragtune knows of one adapter; every field is optional, so a plain PEFT folder has an empty card."""

    name: str | None = None
    base_model: str | None = None
    rank: int | None = None
    alpha: float | None = None
    steps: int | None = None
    final_loss: float | None = None
    created: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    held_out: dict[str, Any] = field(default_factory=dict)
    probe: list[dict[str, Any]] = field(default_factory=list)  # held-out pairs for the "is it applied?" check
    first_token_bias: dict[str, float] = field(default_factory=dict)  # set by adapters.training.calibrate
    calibration: dict[str, Any] = field(default_factory=dict)
    served_by: str | None = None  # a served adapter's server (vLLM --enable-lora), not a local folder
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bias = self.first_token_bias
        if not isinstance(bias, dict) or not all(
            isinstance(text, str) and text.strip() and isinstance(value, int | float) and not isinstance(value, bool)
            for text, value in bias.items()
        ):
            raise AdapterCardError(
                f'first_token_bias must map texts to numbers, like {{"I don\'t know": -1.5}}, not {bias!r}: '
                "fix it, or remove it to decode without a bias."
            )
        for name in ("rank", "steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise AdapterCardError(f"{name} must be a whole number, not {value!r}.")
        for name in ("training", "held_out", "calibration", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise AdapterCardError(f"{name} must be an object, not {getattr(self, name)!r}.")
        if not isinstance(self.probe, list) or not all(
            isinstance(p, dict) and {"messages", "answer"} <= p.keys() for p in self.probe
        ):
            raise AdapterCardError("probe must be a list of {messages, answer} pairs.")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AdapterCard:
        """A card from its JSON object; unknown keys go to `extra`, the format number is dropped."""
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {key: value for key, value in data.items() if key not in known and key != "format"}
        return cls(**{key: value for key, value in data.items() if key in known}, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The JSON object as written: set fields, then the extra keys, with the format number."""
        values = {key: value for key, value in asdict(self).items() if key != "extra" and value not in (None, {}, [])}
        return {"format": CARD_FORMAT, **self.extra, **values}

    @classmethod
    def read(cls, folder: Path) -> AdapterCard:
        """The card in `folder`, or an empty one if it has none."""
        path = folder / CARD_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise AdapterCardError(f"{path} cannot be read as JSON ({error}): fix or remove that file.") from error
        if not isinstance(data, dict):
            raise AdapterCardError(f"{path} holds {type(data).__name__}, not an object: fix or remove that file.")
        try:
            return cls.from_json(data)
        except TypeError as error:  # a field given twice or a bad shape
            raise AdapterCardError(f"{path}: {error}: fix or remove that file.") from error
        except AdapterCardError as error:
            raise AdapterCardError(f"{path}: {error}") from error

    def write(self, folder: Path) -> None:
        """Save the card in `folder` as sorted JSON, all or nothing."""
        atomic_write_text(folder / CARD_FILE, json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
