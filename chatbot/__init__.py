"""ragtune's engine: settings, models, store, retrieval, prompts, generation."""

from chatbot.config import Settings
from chatbot.errors import ModelNotFoundError, RagtuneError, SettingsError

__all__ = ["ModelNotFoundError", "RagtuneError", "Settings", "SettingsError"]
