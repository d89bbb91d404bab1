"""What the engine returns: an answer with everything that made it, and the adapters it can switch to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatbot.rag.retrieval import Hit


@dataclass
class Answer:
    """One answer, with everything needed to see how it was made."""

    text: str
    sources: list[Hit]
    prompt: str
    strategy: str
    use_retrieval: bool
    adapter: str | None
    search_query: str
    timings: dict[str, float] = field(default_factory=dict)
    reasoning: str | None = None
    abstained: bool = False
    abstain_reason: str | None = None
    loop_cut: bool = False  # the model started repeating itself and was stopped there
    citations_added: list[int] = field(default_factory=list)  # cited by the engine: the model cited nothing
    usage: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The `rag-chat --json` object."""
        return {
            "answer": self.text,
            "sources": [hit.to_json() for hit in self.sources],
            "strategy": self.strategy,
            "use_retrieval": self.use_retrieval,
            "adapter": self.adapter,
            "prompt": self.prompt,
            "timings": {name: round(seconds, 4) for name, seconds in self.timings.items()},
            "search_query": self.search_query,
            "reasoning": self.reasoning,
            "abstained": self.abstained,
            "abstain_reason": self.abstain_reason,
            "loop_cut": self.loop_cut,
            "citations_added": self.citations_added,
            "usage": self.usage,
        }
