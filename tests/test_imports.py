"""Importing the packages must stay cheap: torch loads only when a model is built."""

import subprocess
import sys


def test_importing_the_packages_does_not_import_torch():
    code = (
        "import sys\n"
        "import chatbot, chatbot.core.config, chatbot.llm.loading, chatbot.engine, chatbot.llm.local, chatbot.cli.chat\n"
        "import ingest, ingest.cli, adapters, ui\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'streamlit') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_the_setup_check_prints_a_one_line_error_for_a_bad_setting():
    result = subprocess.run(
        [sys.executable, "-m", "chatbot"],
        capture_output=True,
        text=True,
        env={"RAG_TOP_K": "-3", "PATH": ""},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "ragtune: RAG_TOP_K=-3 is not allowed: expected a whole number from 1 to 50."
    ]
