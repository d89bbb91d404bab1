"""Shared bits for the benchmarks: the machine description, a timer, markdown tables, argument parsing.

Every benchmark prints the machine line next to its table because the numbers mean
little without it: this project runs on small CPU boxes where a second process can
halve the throughput, so the load average at the start is part of the line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tabulate import tabulate

# Set before anything imports huggingface_hub: an accidental hub lookup must fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # loaders' progress bars would bury the tables

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_KB = ROOT / "data" / "kb"
SAMPLE_QA = ROOT / "data" / "kb_qa.jsonl"
SHARED_NOTE = (
    "Taken on a shared 2-core machine while other work (another engineer's test run) may overlap: "
    "single timings move by 10-40% between runs here (the raw encode before/after spread shows how much), "
    "so read ratios measured in the same run, not absolute numbers, and a ratio only to within that spread."
)
PACKAGES = ("torch", "transformers", "sentence-transformers", "qdrant-client", "qdrant-edge-py", "langchain-qdrant")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def ram_gib() -> float:
    """Total memory in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def versions() -> dict[str, str]:
    """Python and the versions of the packages that decide the numbers (read without importing them)."""
    found = {"python": platform.python_version()}
    for dist in PACKAGES:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    return found


def machine_line() -> str:
    """One line: CPU, cores, RAM, load average now, and versions."""
    cores = len(os.sched_getaffinity(0))
    packages = ", ".join(f"{name} {value}" for name, value in versions().items())
    load = os.getloadavg()[0]
    return f"{cpu_model()}, {cores} cores, {ram_gib():.0f} GiB RAM, load avg {load:.2f}; {packages}"


def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Call `function` and return its result and the wall seconds it took."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table, each cell as `str` gives it (tabulate would reformat numbers)."""
    cells = [[str(cell) for cell in row] for row in rows]
    return tabulate(cells, headers=list(headers), tablefmt="github", disable_numparse=True)


def parse_args(description: str, *, parts: Sequence[str] = ()) -> argparse.Namespace:
    """`--quick`, `--full`, `--out PATH` (where run.py collects the markdown section), and `--only PART`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--full", action="store_true", help="also the slow extras (the Plausible KB, more passes)")
    parser.add_argument("--out", type=Path, help="also write the markdown section to this file")
    if parts:
        parser.add_argument("--only", choices=parts, action="append", help="run just these parts (repeatable)")
    return parser.parse_args()


def emit(section: str, out: Path | None) -> None:
    """Print the markdown section, and write it to `out` if given."""
    print(section, flush=True)
    if out is not None:
        out.write_text(section + "\n")


# The sample-KB helpers import the project inside them: run.py imports this module and stays light.


def sample_questions(count: int) -> list[str]:
    """The first `count` answerable questions of data/kb_qa.jsonl."""
    rows = [json.loads(line) for line in SAMPLE_QA.read_text().splitlines() if line.strip()]
    return [row["question"] for row in rows if row["kind"] != "unanswerable"][:count]


def sample_chunks() -> list[Any]:
    """data/kb cut into chunks exactly as `rag-ingest` cuts it (Documents with title and section)."""
    from chatbot.core.config import Settings
    from chatbot.llm.loading import embed_token_counter
    from ingest.loaders import load_file
    from ingest.pipeline import discover_files
    from ingest.split import ChunkerSettings, split_documents

    count_tokens, window = embed_token_counter(Settings())
    files, _, _ = discover_files([SAMPLE_KB])
    documents = [document for item in files for document in load_file(item.path, item.source)]
    return split_documents(documents, count_tokens, ChunkerSettings(chunk_tokens=window - 2))


def ingest_sample_kb(folder: Path, embeddings: Any) -> Any:
    """A `Store` over a fresh local Qdrant folder holding data/kb, ingested the way `rag-ingest` does it."""
    from chatbot.core.config import Settings
    from chatbot.rag.store import Store
    from ingest.pipeline import ingest_paths

    settings = Settings(qdrant_path=folder)
    store = Store.open(settings)
    ingest_paths([SAMPLE_KB], settings, store=store, embeddings=embeddings)
    return store
