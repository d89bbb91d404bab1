"""`make bench`: run every benchmark in its own process and collect their tables in bench/results.md.

Each benchmark runs as a subprocess so that one's imports, warm caches and memory
never flatter or burden the next, and so each stays runnable alone
(`.venv/bin/python bench/bench_ingest.py`). Their output streams through as they run;
the markdown section each writes is gathered into one file with the machine details.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from common import ROOT, SHARED_NOTE, cpu_model, ram_gib, versions

BENCH = Path(__file__).resolve().parent
BENCHMARKS = {
    "ingest": "bench_ingest.py",
    "models": "bench_models.py",
    "embed": "bench_embed.py",
    "retrieval": "bench_retrieval.py",
    "store": "bench_store.py",
    "generation": "bench_generation.py",
    "runtime": "bench_runtime.py",
    "bigmodels": "bench_big_models.py",
}


def run_one(name: str, flags: list[str], folder: Path) -> tuple[str, float, int]:
    """Run one benchmark; its markdown section, the wall seconds, and its exit code."""
    out = folder / f"{name}.md"
    command = [sys.executable, str(BENCH / BENCHMARKS[name]), "--out", str(out), *flags]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = datetime.now()
    code = subprocess.run(command, cwd=ROOT, check=False).returncode
    seconds = (datetime.now() - started).total_seconds()
    if code == 0 and out.is_file():
        return out.read_text(), seconds, code
    return f"## {name}\n\nFAILED (exit code {code}); see the console output.\n", seconds, code


def header(flags: list[str], names: list[str], seconds: float) -> str:
    """Date, mode and machine details for the top of results.md."""
    found = versions()
    lines = [
        "# ragtune benchmarks",
        "",
        f"- Date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- Run: `{' '.join(['bench/run.py', *flags])}` ({', '.join(names)}), {seconds / 60:.1f} min in all",
        f"- CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; RAM {ram_gib():.0f} GiB",
        f"- Python {found.pop('python')}; " + ", ".join(f"{name} {value}" for name, value in found.items()),
        f"- {SHARED_NOTE}",
    ]
    if "--quick" in flags:
        lines.append("- **Quick run** (smaller sizes): a smoke test, not numbers to quote.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--full", action="store_true", help="also the Plausible KB's ingest and 3 retrieval passes")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="run just this benchmark")
    parser.add_argument("--out", type=Path, default=BENCH / "results.md", help="where to write the results")
    args = parser.parse_args()
    names = [args.only] if args.only else list(BENCHMARKS)

    flags = [flag for flag, on in (("--quick", args.quick), ("--full", args.full)) if on]
    sections, failed, total = [], [], 0.0
    with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as folder:
        for name in names:
            section, seconds, code = run_one(name, flags, Path(folder))
            sections.append(f"{section.rstrip()}\n\n_{name} took {seconds:.0f} s wall._")
            total += seconds
            if code:
                failed.append(name)
    args.out.write_text("\n\n".join([header(flags, names, total), *sections]) + "\n")
    print(f"\nwrote {args.out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
