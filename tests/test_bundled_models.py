"""The embedded default, for real: the bundled embedding model and generator load and work offline."""

from __future__ import annotations

import math

import pytest

from chatbot.core.config import Settings
from chatbot.llm import loading as models

pytestmark = pytest.mark.integration


def test_bundled_embeddings_embed_and_rank_by_meaning(capfd):
    embeddings = models.load_embeddings(Settings(embed_backend="torch"))  # test_embed_openvino has the other
    assert "Loading weights" not in capfd.readouterr().err  # rag-search loads it on every call: no progress bar
    query = embeddings.embed_query("How do I print a shipping label?")
    related, unrelated = embeddings.embed_documents(["Printing labels for parcels", "Bananas are rich in potassium"])

    assert len(query) == 384
    assert math.isclose(math.fsum(v * v for v in query), 1.0, rel_tol=1e-4)
    dot = lambda a, b: math.fsum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert dot(query, related) > dot(query, unrelated) + 0.2


def test_the_bundled_gguf_converts_once_to_a_plain_cache(bundled_cache):
    settings, path, seconds = bundled_cache

    assert seconds is not None and (path / "model.safetensors").is_file()
    assert models.ensure_generator_cache(settings) == (path, None)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
