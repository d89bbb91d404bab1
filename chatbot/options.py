"""What one answer is asked with: the levers (retrieval, adapter, prompt strategy) and how retrieval runs.

The page, the CLIs and the evaluation build one frozen `AnswerOptions` and pass its fields to
`engine.answer`/`engine.stream` as keyword arguments; its `label` is how every one of them names
a configuration, and `grid` is the one way a set of configurations is laid out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from itertools import product
from typing import Any

from chatbot.core.config import TOP_K_RANGE
from chatbot.core.errors import InvalidOptionError
from chatbot.rag.prompts import Strategy, parse_strategy
from chatbot.rag.retrieval import RetrievalMode, parse_mode


@dataclass(frozen=True)
class AnswerOptions:
    """The per-call levers; `adapter=None` is the base model, `served` picks the served model next to a local one."""

    use_retrieval: bool = True
    adapter: str | None = None
    strategy: Strategy = Strategy.ZERO_SHOT
    top_k: int | None = None  # None: the engine's default (RAG_TOP_K)
    mode: RetrievalMode | None = None  # None: the retriever's default
    served: bool = False
    abstain: bool = True  # False: always generate, however weak the best passage

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", parse_strategy(self.strategy))
        if self.mode is not None:
            object.__setattr__(self, "mode", parse_mode(self.mode))
        low, high = TOP_K_RANGE
        top_k = self.top_k
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or not low <= top_k <= high):
            raise InvalidOptionError(
                f"top_k={self.top_k!r} is not allowed: expected a whole number from {low} to {high}."
            )

    def kwargs(self) -> dict[str, Any]:
        """The fields as `engine.answer`/`engine.stream` take them."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @property
    def label(self) -> str:
        """E.g. 'retrieval on (hybrid, top 4) · adapter support-rag · Few-shot'."""
        if self.use_retrieval:
            detail = ", ".join(part for part in (self.mode, self.top_k and f"top {self.top_k}") if part)
            retrieval = f"retrieval on ({detail})" if detail else "retrieval on"
        else:
            retrieval = "retrieval off"
        model = "served model" if self.served else "base model"
        adapter = f"{'served ' if self.served else ''}adapter {self.adapter}" if self.adapter else model
        return f"{retrieval} · {adapter} · {self.strategy.label}"

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON object, label included."""
        return {
            "label": self.label,
            **asdict(self),
            "strategy": self.strategy.value,
            "mode": self.mode and str(self.mode),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnswerOptions:
        """Options from `to_json()`'s object (the label is derived, so it is ignored)."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def grid(
    base: AnswerOptions = AnswerOptions(),
    *,
    use_retrieval: Iterable[bool] | None = None,
    adapters: Iterable[str | None] | None = None,
    served_adapters: Iterable[str | None] = (),
    strategies: Iterable[str | Strategy] | None = None,
) -> list[AnswerOptions]:
    """Every combination of the values given, the others kept from `base`: by strategy, then adapter, then retrieval.

    `served_adapters` adds adapter values on the served model (None: its base) after the local ones.
    """
    strategy_values = dict.fromkeys(parse_strategy(s) for s in strategies) if strategies else [base.strategy]
    local = [(adapter, False) for adapter in adapters] if adapters is not None else [(base.adapter, base.served)]
    adapter_values = dict.fromkeys([*local, *((adapter, True) for adapter in served_adapters)])
    retrieval_values = dict.fromkeys(use_retrieval) if use_retrieval is not None else [base.use_retrieval]
    return [
        replace(base, strategy=strategy, adapter=adapter, served=served, use_retrieval=retrieval)
        for strategy, (adapter, served), retrieval in product(strategy_values, adapter_values, retrieval_values)
    ]
