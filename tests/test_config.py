from pathlib import Path

import pytest

from chatbot.core.config import Settings
from chatbot.core.errors import SettingsError


def test_defaults_match_the_design():
    settings = Settings.from_env({})
    assert settings.qdrant_path == Path(".ragtune/qdrant")
    assert settings.collection == "kb"
    assert settings.top_k == 4
    assert settings.embed_backend == "openvino"
    assert Settings.from_env({"RAG_EMBED_BACKEND": " Torch "}).embed_backend == "torch"
    assert settings.qdrant_url is None and settings.embed_model is None and settings.llm_model is None


def test_every_setting_is_read_from_its_variable(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    settings = Settings.from_env(
        {
            "RAG_QDRANT_PATH": str(tmp_path / "q"),
            "RAG_QDRANT_URL": "http://localhost:6333",
            "RAG_QDRANT_API_KEY": "secret",
            "RAG_COLLECTION": "docs_v2",
            "RAG_EMBED_MODEL": str(model_dir),
            "RAG_LLM_MODEL": "HuggingFaceTB/SmolLM2-360M-Instruct",
            "RAG_LLM_BASE_URL": "https://llm.example.com/v1",
            "RAG_ADAPTERS_DIR": str(tmp_path / "adapters"),
            "RAG_CACHE_DIR": str(tmp_path / "cache"),
            "RAG_TOP_K": " 8 ",
            "RAG_PRODUCT": "Plausible",
        }
    )
    assert settings.qdrant_path == tmp_path / "q"
    assert settings.collection == "docs_v2"
    assert settings.embed_model == str(model_dir)
    assert settings.llm_model == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.top_k == 8
    assert settings.product == "Plausible"
    assert settings.describe()["RAG_QDRANT_API_KEY"] == "***"


def test_empty_values_count_as_unset():
    assert Settings.from_env({"RAG_TOP_K": "", "RAG_QDRANT_URL": "  "}) == Settings()


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("RAG_TOP_K", "-3", "from 1 to 50"),
        ("RAG_TOP_K", "0", "from 1 to 50"),
        ("RAG_TOP_K", "five", "whole number"),
        ("RAG_TOP_K", "500", "from 1 to 50"),
        ("RAG_COLLECTION", "my docs!", "letters, digits"),
        ("RAG_QDRANT_URL", "localhost:6333", "http://"),
        ("RAG_LLM_BASE_URL", "ftp://models", "http://"),
        ("RAG_EMBED_MODEL", "/no/such/model", "existing local model directory"),
        ("RAG_LLM_MODEL", "./missing-model", "existing local model directory"),
        ("RAG_EMBED_BACKEND", "onnx", "openvino or torch"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_allowed(variable, value, allowed):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}={value.strip()} is not allowed")
    assert allowed in message
    assert "\n" not in message


def test_api_key_without_a_server_is_refused():
    with pytest.raises(SettingsError, match=r"RAG_QDRANT_API_KEY.*RAG_QDRANT_URL"):
        Settings.from_env({"RAG_QDRANT_API_KEY": "k"})


def test_a_misspelled_setting_is_caught_but_unrelated_rag_variables_are_not():
    with pytest.raises(SettingsError, match="RAG_TOPK is not a ragtune setting: did you mean RAG_TOP_K"):
        Settings.from_env({"RAG_TOPK": "3"})
    assert Settings.from_env({"RAG_SOMETHING_ELSE": "x"}) == Settings()


def test_settings_are_frozen_and_validated_when_built_in_code():
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.top_k = 3  # type: ignore[misc]
    with pytest.raises(SettingsError, match="RAG_TOP_K"):
        Settings(top_k=True)


def test_server_settings_are_read_and_typed(tmp_path):
    settings = Settings.from_env(
        {
            "RAG_QDRANT_URL": "http://localhost:6333",
            "RAG_QDRANT_SHARDS": "4",
            "RAG_QDRANT_REPLICAS": "2",
            "RAG_LLM_BASE_URL": "http://localhost:8000/v1",
            "RAG_LLM_API_KEY": "token",
            "RAG_LLM_MODEL": "/models/llama-3-8b",  # a served name: vLLM names a model by the path it loaded
            "RAG_LLM_TIMEOUT": "2.5",
            "RAG_LLM_CONTEXT_WINDOW": "8192",
            "RAG_LLM_TOKENIZER": str(tmp_path),
            "RAG_LOCAL_LLM": "yes",
        }
    )
    assert (settings.qdrant_shards, settings.qdrant_replicas) == (4, 2)
    assert settings.llm_timeout == 2.5 and settings.llm_context_window == 8192
    assert settings.llm_model == "/models/llama-3-8b" and settings.llm_tokenizer == str(tmp_path)
    assert settings.describe()["RAG_LLM_API_KEY"] == "***"
    assert settings.local_llm_model is None  # yes: the bundled model
    local = settings.local_side()
    assert local.llm_base_url is None and local.llm_model is None and local.llm_api_key is None
    assert local.qdrant_url == settings.qdrant_url and local.adapters_dir == settings.adapters_dir


def test_local_llm_takes_a_folder_and_0_turns_it_off(tmp_path):
    on = Settings.from_env({"RAG_LLM_BASE_URL": "http://localhost:8000/v1", "RAG_LOCAL_LLM": str(tmp_path)})
    assert on.local_llm_model == str(tmp_path) == on.local_side().llm_model
    off = Settings.from_env({"RAG_LLM_BASE_URL": "http://localhost:8000/v1", "RAG_LOCAL_LLM": "0"})
    assert off.local_llm is None


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("RAG_QDRANT_SHARDS", "0", "from 1 to 256"),
        ("RAG_QDRANT_SHARDS", "two", "whole number"),
        ("RAG_QDRANT_REPLICAS", "17", "from 1 to 16"),
        ("RAG_LLM_TIMEOUT", "0", "seconds, a number from 0.1 to 3600"),
        ("RAG_LLM_TIMEOUT", "soon", "seconds"),
        ("RAG_LLM_CONTEXT_WINDOW", "100", "from 256 to"),
        ("RAG_LLM_TOKENIZER", "./no-tokenizer-here", "existing local model directory"),
        ("RAG_LOCAL_LLM", "./no-model-here", "existing local model directory"),
    ],
)
def test_a_bad_server_setting_names_the_variable_the_value_and_what_is_allowed(variable, value, allowed):
    servers = {"RAG_QDRANT_URL": "http://localhost:6333", "RAG_LLM_BASE_URL": "http://localhost:8000/v1"}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**servers, variable: value})
    assert str(caught.value).startswith(f"{variable}={value} is not allowed")
    assert allowed in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "needs"),
    [
        ("RAG_QDRANT_SHARDS", "2", "RAG_QDRANT_URL"),
        ("RAG_QDRANT_REPLICAS", "2", "RAG_QDRANT_URL"),
        ("RAG_LLM_API_KEY", "k", "RAG_LLM_BASE_URL"),
        ("RAG_LLM_CONTEXT_WINDOW", "4096", "RAG_LLM_BASE_URL"),
        ("RAG_LOCAL_LLM", "1", "RAG_LLM_BASE_URL"),
    ],
)
def test_a_server_setting_without_its_server_is_refused(variable, value, needs):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert f"only together with {needs}" in str(caught.value)
    assert "k is not allowed" not in str(caught.value)  # a key is never echoed


def test_rag_llm_model_is_a_folder_locally_and_a_served_name_with_a_base_url():
    with pytest.raises(SettingsError, match="RAG_LLM_MODEL=/models/llama is not allowed"):
        Settings.from_env({"RAG_LLM_MODEL": "/models/llama"})
    served = Settings.from_env({"RAG_LLM_MODEL": "/models/llama", "RAG_LLM_BASE_URL": "http://gpu:8000/v1"})
    assert served.llm_model == "/models/llama"


def test_credentials_in_a_server_url_are_never_echoed():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"RAG_QDRANT_URL": "user:s3cret@qdrant.example:6333"})  # the scheme forgotten
    assert str(caught.value).startswith("RAG_QDRANT_URL=***@qdrant.example:6333 is not allowed")

    settings = Settings(
        qdrant_url="https://admin:s3cret@qdrant.example:6333",
        llm_base_url="http://user:s3cret@gpu.example:8000/v1?api_key=s3cret",
    )
    shown = settings.describe()
    assert shown["RAG_QDRANT_URL"] == "https://***@qdrant.example:6333"
    assert shown["RAG_LLM_BASE_URL"] == "http://***@gpu.example:8000/v1?api_key=***"


def test_a_qdrant_server_url_with_credentials_is_masked_in_its_errors():
    from fake_openai import closed_port

    from chatbot.core.errors import StoreError
    from chatbot.rag.store import Store

    with pytest.raises(StoreError) as caught:
        Store.open(Settings(qdrant_url=f"http://admin:s3cret@127.0.0.1:{closed_port()}"))
    assert str(caught.value).startswith("cannot reach RAG_QDRANT_URL=http://***@127.0.0.1:")
    assert "s3cret" not in str(caught.value)
