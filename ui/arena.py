"""The Arena page's plain parts: the configurations on offer, the blind draw, and one duel's state. No widgets.

The draw picks two of the chosen configurations and the order they are shown in
with one `random.Random` per browser session. `SEED` is None in the app (the
generator seeds itself from the OS) and set by tests, so a test knows which
configuration will be shown as A.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from adapters.registry import AdapterInfo
from chatbot.engine import Answer
from chatbot.options import AnswerOptions
from chatbot.options import grid as options_grid
from chatbot.rag.prompts import Strategy

SEED: int | None = None
LETTERS = ("A", "B")


def offered(
    adapters: list[AdapterInfo], *, served_base: str | None = None, top_k: int | None = None
) -> list[AnswerOptions]:
    """The configurations to pick from: retrieval off/on x base model and each loaded adapter (local and served)
    x every strategy, with retrieval reading `top_k` passages.

    The served base model (listed among the served adapters by its name, `served_base`) is no adapter: as in
    `rag-eval`'s grid it is `adapter=None, served=True`, so both name it alike ("served model").
    """
    loaded = [info for info in adapters if info.loaded]
    served = [None if info.name == served_base else info.name for info in loaded if info.served]
    return options_grid(
        AnswerOptions(top_k=top_k),
        use_retrieval=(False, True),
        adapters=[None, *(info.name for info in loaded if not info.served)],
        served_adapters=list(dict.fromkeys(served)),
        strategies=list(Strategy),
    )


def draw(rng: random.Random, chosen: list[AnswerOptions]) -> tuple[AnswerOptions, AnswerOptions]:
    """Two different configurations of `chosen`, in the order they are shown (A first)."""
    first, second = rng.sample(chosen, 2)
    return first, second


@dataclass
class Duel:
    """One blind round: the question, the two configurations as shown, their answers, and the vote once cast."""

    question: str
    shown: tuple[AnswerOptions, AnswerOptions]
    question_id: str | None = None
    answers: list[Answer | None] = field(default_factory=lambda: [None, None])
    errors: list[str | None] = field(default_factory=lambda: [None, None])
    outcome: str | None = None  # set once voted: only then are the labels shown

    @property
    def answered(self) -> bool:
        """Both answers are in (a vote can be cast)."""
        return all(answer is not None for answer in self.answers)

    def title(self, side: int) -> str:
        """'A' before the vote; 'A · <label>' after it."""
        letter = LETTERS[side]
        return f"{letter} · {self.shown[side].label}" if self.outcome else letter
