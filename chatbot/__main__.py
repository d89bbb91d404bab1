"""`python -m chatbot`: check the settings and put the models in place (used by `make demo`).

Exits 1 with a one-line message when a setting or a model is wrong.
"""

import sys

from chatbot.core.config import Settings
from chatbot.core.errors import RagtuneError
from chatbot.llm.loading import embed_model_path, ensure_generator_cache, generator_source


def main() -> None:
    """Validate and show `RAG_*`, locate the embedding model, convert the bundled generator and export it once."""
    try:
        settings = Settings.from_env()
        for name, value in settings.describe().items():
            print(f"{name}={value}")
        print(f"embeddings: {embed_model_path(settings)}")
        if settings.llm_model:
            print(f"generator:  {settings.llm_model} (RAG_LLM_MODEL)")
            if settings.llm_base_url:
                return  # the name a server knows its model by, not a folder here
        else:
            path, seconds = ensure_generator_cache(settings)
            done = "cached" if seconds is None else f"converted from GGUF in {seconds:.1f} s"
            print(f"generator:  {path} ({done})")
        if settings.llm_runtime == "openvino" and not settings.llm_base_url:
            _export(settings)
    except RagtuneError as error:
        sys.exit(f"ragtune: {error}")


def _export(settings: Settings) -> None:
    # The app's first answer should not wait for the one-off export; when it cannot be made, the app says why
    # and runs the generator on transformers, so this only reports it.
    from chatbot.llm.ov_export import ensure_export

    try:
        folder, seconds = ensure_export(settings.cache_dir, generator_source(settings)[1], settings.llm_weights)
    except RagtuneError as error:
        print(f"openvino:   not exported ({error})")
        return
    print(f"openvino:   {folder} ({'cached' if seconds is None else f'exported in {seconds:.1f} s'})")


if __name__ == "__main__":
    main()
