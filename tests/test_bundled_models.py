"""The embedded default, for real: the bundled embedding model and generator load and work offline."""

from __future__ import annotations

import math

import pytest

from chatbot import models
from chatbot.config import Settings

pytestmark = pytest.mark.integration


def test_bundled_embeddings_embed_and_rank_by_meaning():
    embeddings = models.load_embeddings(Settings())
    query = embeddings.embed_query("How do I print a shipping label?")
    related, unrelated = embeddings.embed_documents(["Printing labels for parcels", "Bananas are rich in potassium"])

    assert len(query) == 384
    assert math.isclose(math.fsum(v * v for v in query), 1.0, rel_tol=1e-4)
    dot = lambda a, b: math.fsum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert dot(query, related) > dot(query, unrelated) + 0.2


def test_bundled_generator_converts_once_and_answers(tmp_path):
    import torch

    settings = Settings(cache_dir=tmp_path)
    path, seconds = models.ensure_generator_cache(settings)
    assert seconds is not None and (path / "model.safetensors").is_file()

    loaded = models.load_generator(settings)
    inputs = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = loaded.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = loaded.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
    assert models.ensure_generator_cache(settings) == (path, None)
