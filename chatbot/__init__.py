"""ragtune's engine: settings, models, store, retrieval, prompts, generation."""

from typing import Any

from chatbot.core.config import Settings
from chatbot.core.errors import ModelNotFoundError, RagtuneError, SettingsError

__all__ = ["ModelNotFoundError", "RagtuneError", "Settings", "SettingsError", "build_engine"]


def __getattr__(name: str) -> Any:
    # The engine pulls in LangChain and qdrant-client: only load it when someone asks for it,
    # so `import chatbot` stays cheap for the settings check and the ingest command.
    if name == "build_engine":
        from chatbot.build import build_engine

        return build_engine
    raise AttributeError(f"module 'chatbot' has no attribute {name!r}")
