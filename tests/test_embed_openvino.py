"""The embedder run by OpenVINO: the same vectors as torch, an export made once and atomically, no torch for queries."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from chatbot.core.config import Settings
from chatbot.llm import embed_openvino, loading

TEXTS = [
    "How do I print a shipping label?",
    "Refunds reach the original card within 5 to 10 business days.",
    "Bananas are rich in potassium. " * 60,  # longer than the 256-token window: cut the same way
    "ok",
]


@pytest.fixture(scope="module")
def own_model(tmp_path_factory) -> Settings:
    """A user's own RAG_EMBED_MODEL folder (a copy of the bundled one), exported once into a fresh cache."""
    folder = tmp_path_factory.mktemp("user") / "my-minilm"
    shutil.copytree(loading.embed_model_path(Settings()), folder)
    settings = Settings(embed_model=str(folder), cache_dir=tmp_path_factory.mktemp("cache"))
    embed_openvino.ensure_export(settings.cache_dir, folder)
    return settings


@pytest.mark.integration
def test_openvino_vectors_match_torch_ones(own_model):
    fast = loading.load_embeddings(own_model)
    slow = loading.load_embeddings(Settings(embed_model=own_model.embed_model, embed_backend="torch"))
    assert isinstance(fast, embed_openvino.OpenVinoEmbeddings)

    fast_vectors = np.array([*fast.embed_documents(TEXTS), fast.embed_query(TEXTS[0])])
    slow_vectors = np.array([*slow.embed_documents(TEXTS), slow.embed_query(TEXTS[0])])

    assert fast_vectors.shape == (len(TEXTS) + 1, 384)
    assert (fast_vectors * slow_vectors).sum(axis=1).min() >= 0.999  # both are normalised: this is the cosine


@pytest.mark.integration
def test_the_export_is_reused_and_leaves_no_staging_folder(own_model):
    folder = Path(own_model.embed_model)
    target = embed_openvino.export_dir(own_model.cache_dir, folder)

    assert embed_openvino.ensure_export(own_model.cache_dir, folder) == (target, False)
    assert json.loads((target / "meta.json").read_text())["max_seq_length"] == 256
    assert [p.name for p in target.parent.iterdir()] == [target.name]


@pytest.mark.integration
def test_a_query_loads_no_torch(own_model, tmp_path):
    from chatbot.rag.store import Store
    from ingest.pipeline import ingest_paths

    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "refunds.md").write_text("# Refunds\n\nRefunds reach the original card within 5 to 10 business days.\n")
    settings = Settings(embed_model=own_model.embed_model, cache_dir=own_model.cache_dir, qdrant_path=tmp_path / "q")
    store = Store.open(settings)
    try:
        ingest_paths([kb], settings, store=store)
    finally:
        store.close()
    code = textwrap.dedent(
        """
        import sys
        from chatbot.cli.search import main
        code = main(["how long do refunds take", "--json"])
        heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
        print(f"exit={code} heavy={','.join(heavy)}")
        """
    )
    env = {
        "PATH": "",
        "HF_HUB_OFFLINE": "1",
        "RAG_EMBED_MODEL": own_model.embed_model,
        "RAG_CACHE_DIR": str(own_model.cache_dir),
        "RAG_QDRANT_PATH": str(tmp_path / "q"),
    }
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    *hits, last = result.stdout.strip().splitlines()
    assert last == "exit=0 heavy="
    assert json.loads(hits[0])["hits"][0]["source"] == "refunds.md"


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")

    def broken(source: Path, folder: Path) -> None:
        (folder / "model.xml").write_text("half")
        raise RuntimeError("cannot trace this model")

    monkeypatch.setattr(embed_openvino, "_export", broken)
    with pytest.raises(RuntimeError):
        embed_openvino.ensure_export(tmp_path / "cache", model)
    assert list((tmp_path / "cache" / "embeddings").iterdir()) == []


def test_the_export_is_keyed_by_the_weight_files(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"old")
    before = embed_openvino.export_dir(tmp_path, model)
    (model / "model.safetensors").write_bytes(b"new weights")

    assert embed_openvino.export_dir(tmp_path, model) != before


def test_without_openvino_the_torch_route_runs_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "chatbot.llm.embed_openvino", None)  # importing it now raises ImportError
    monkeypatch.setattr(loading, "_load_torch_embeddings", lambda path: ("torch", path))

    with caplog.at_level(logging.WARNING, logger=loading.__name__):
        kind, _ = loading.load_embeddings(Settings(cache_dir=tmp_path))

    assert kind == "torch"
    assert "embedding with torch, as OpenVINO is not installed" in caplog.text
    assert "RAG_EMBED_BACKEND=torch" in caplog.text


def test_a_model_openvino_cannot_export_runs_on_torch_with_a_warning(tmp_path, monkeypatch, caplog):
    def broken(source: Path, folder: Path) -> None:
        raise RuntimeError("Couldn't get TorchScript module by tracing")

    monkeypatch.setattr(embed_openvino, "_export", broken)
    monkeypatch.setattr(loading, "_load_torch_embeddings", lambda path: "torch")

    with caplog.at_level(logging.WARNING, logger=loading.__name__):
        assert loading.load_embeddings(Settings(cache_dir=tmp_path)) == "torch"
    assert "OpenVINO could not run" in caplog.text and "by tracing" in caplog.text


def test_rag_embed_backend_torch_never_touches_openvino(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "chatbot.llm.embed_openvino", None)
    monkeypatch.setattr(loading, "_load_torch_embeddings", lambda path: "torch")

    assert loading.load_embeddings(Settings(cache_dir=tmp_path, embed_backend="torch")) == "torch"
