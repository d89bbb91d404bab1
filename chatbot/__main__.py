"""`python -m chatbot`: check the settings and put the models in place (used by `make demo`).

Exits 1 with a one-line message when a setting or a model is wrong.
"""

import sys

from chatbot.core.config import Settings
from chatbot.core.errors import RagtuneError
from chatbot.llm.loading import embed_model_path, ensure_generator_cache


def main() -> None:
    """Validate and show `RAG_*`, locate the embedding model, convert the bundled generator once."""
    try:
        settings = Settings.from_env()
        for name, value in settings.describe().items():
            print(f"{name}={value}")
        print(f"embeddings: {embed_model_path(settings)}")
        if settings.llm_model:
            print(f"generator:  {settings.llm_model} (RAG_LLM_MODEL)")
            return
        path, seconds = ensure_generator_cache(settings)
        done = "cached" if seconds is None else f"converted from GGUF in {seconds:.1f} s"
        print(f"generator:  {path} ({done})")
    except RagtuneError as error:
        sys.exit(f"ragtune: {error}")


if __name__ == "__main__":
    main()
