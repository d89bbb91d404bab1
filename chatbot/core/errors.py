"""The errors ragtune raises for things a user can fix.

Every message says what was found and what to do about it; the CLIs and the
pages show the message alone, never a traceback.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

E = TypeVar("E", bound=Enum)


class RagtuneError(Exception):
    """Base class: a problem the user can fix (bad setting, missing model, ...)."""


class SettingsError(RagtuneError):
    """A `RAG_*` setting has a value that is not allowed."""


class ModelNotFoundError(RagtuneError):
    """A model could not be found locally (missing package or bad path)."""


class StoreError(RagtuneError):
    """The vector store cannot be used as asked (locked, unreachable, missing collection)."""


class StoreLockedError(StoreError):
    """Another process holds the local Qdrant folder."""


class FingerprintMismatchError(StoreError):
    """The collection was built with another embedding model or chunker."""


class LoadError(RagtuneError):
    """A file could not be read as a document; the message is the reason and the fix."""


class CollectionMissingError(StoreError):
    """The collection does not exist yet, or holds nothing: run rag-ingest first."""


class AdapterNotFoundError(RagtuneError):
    """A LoRA adapter was asked for by a name that is not loaded."""


class AdapterCardError(RagtuneError):
    """An adapter folder's card or config cannot be read, or holds a value that is not allowed."""


class OutputExistsError(RagtuneError):
    """A folder to write into already holds something: pick a new one."""


class InvalidOptionError(RagtuneError):
    """An option has a value outside its choices (strategy, retrieval mode, ...)."""


class TrainingDataError(RagtuneError):
    """A training-pairs file has a line that cannot be used; the message names the line."""


class QuestionSetError(RagtuneError):
    """A question set (jsonl) has a bad line, or names sources the collection does not hold."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (transformers' errors run to pages)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def parse_choice(choices: type[E], value: str | E, what: str) -> E:
    """The member of the enum `choices` named by `value`, or an error naming `what` it is and the choices."""
    try:
        return choices(value)
    except ValueError:
        names = ", ".join(choice.value for choice in choices)
        raise InvalidOptionError(f"Unknown {what} {value!r}: choose one of {names}.") from None
