"""Shared test set-up: everything offline, so an accidental hub download fails at once."""

import os

import pytest

from chatbot.core.config import Settings

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def bundled_cache(tmp_path_factory):
    """The bundled generator converted from its GGUF once per test session: (settings, folder, seconds)."""
    from chatbot.llm import loading as models

    settings = Settings(cache_dir=tmp_path_factory.mktemp("cache"))
    path, seconds = models.ensure_generator_cache(settings)
    return settings, path, seconds


@pytest.fixture(scope="session")
def bundled_generator(bundled_cache):
    """The real SmolLM2, loaded once per test session from the converted cache."""
    from chatbot.llm import loading as models

    return models.load_generator(bundled_cache[0])


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A tiny Llama written as GGUF and converted the way the bundled model is: built once per session."""
    from gguf_fixture import write_tiny_llama_gguf

    from chatbot.llm import loading as models

    folder = tmp_path_factory.mktemp("tiny")
    write_tiny_llama_gguf(folder / "tiny.gguf")
    models.convert_gguf(folder / "tiny.gguf", folder / "model")
    return folder / "model"


# The engines every store-level test runs on: qdrant-client (in memory; local mode and a server share its
# code path) and Qdrant Edge (the embedded default), so a behaviour that differs between them fails a test.
STORE_ENGINES = ("memory", "edge")


def new_store(engine: str, folder):
    """An empty collection 'kb' on `engine` ("memory", "local" or "edge"); Edge and local mode keep it in `folder`."""
    from qdrant_client import QdrantClient

    from chatbot.rag.store import Store

    if engine == "memory":
        return Store(QdrantClient(location=":memory:"), "kb")
    return Store.open(Settings(qdrant_path=folder, qdrant_engine=engine))


@pytest.fixture(params=STORE_ENGINES)
def store(request, tmp_path):
    """A fresh collection on each engine in `STORE_ENGINES` (a test module may define its own `store`)."""
    store = new_store(request.param, tmp_path / "store")
    yield store
    store.close()
