"""`rag-ingest PATH...`: bring the collection in line with files and folders.

Exit codes: 0 when the readable files landed (or nothing needed doing), 1 when
nothing could be ingested or the store refused, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from chatbot.core.config import Settings
from chatbot.core.errors import RagtuneError, SettingsError
from chatbot.rag.store import Store
from ingest.loaders import SUPPORTED_SUFFIXES
from ingest.pipeline import MAX_FILE_BYTES, IngestReport, ingest_paths
from ingest.worker import FILE_TIMEOUT_S, ReadLimits

_PHASES = {"hash": ("hashing", "file"), "load": ("loading", "file"), "embed": ("embedding", "chunk")}


class TerminalProgress:
    """One tqdm bar per phase on stderr; silent when stderr is not a terminal."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.bar = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if phase != self.phase:
            self.close()
            label, unit = _PHASES.get(phase, (phase, "item"))
            self.phase, self.bar = phase, tqdm(total=total, desc=label, unit=unit, disable=None, leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.phase, self.bar = None, None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag-ingest",
        description="Ingest files and folders into the Qdrant collection; only added or changed files are embedded.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders (folders recursively)")
    parser.add_argument("--collection", help="collection name (default: RAG_COLLECTION or 'kb')")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (added/changed/removed); write nothing")
    parser.add_argument("--recreate", action="store_true", help="drop the collection and ingest from scratch")
    parser.add_argument(
        "--max-file-mb",
        type=_within(0, 10_000),
        default=MAX_FILE_BYTES / 1e6,
        help="skip larger files as failed (default 50)",
    )
    parser.add_argument(
        "--file-timeout",
        type=_within(0, 86_400),
        default=FILE_TIMEOUT_S,
        metavar="SECONDS",
        help=f"list a file that takes longer to read as failed (default {FILE_TIMEOUT_S:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with the result")
    return parser


def _within(low: float, high: float):
    """An argparse type: a finite number above `low` and at most `high` (argparse exits 2 otherwise)."""

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (low < value <= high):  # also false for nan
            raise argparse.ArgumentTypeError(f"{text} is not allowed: use a number above {low:g}, at most {high:g}")
        return value

    return number


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rag-ingest`."""
    args = build_parser().parse_args(argv)
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        print(f"rag-ingest: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
        if args.collection:
            Settings(collection=args.collection)  # same validation as RAG_COLLECTION
    except SettingsError as error:
        print(f"rag-ingest: {error}", file=sys.stderr)
        return 2

    progress = TerminalProgress()
    store = None
    try:
        store = Store.open(settings, args.collection)
        report = ingest_paths(
            args.paths,
            settings,
            store=store,
            dry_run=args.dry_run,
            recreate=args.recreate,
            max_file_bytes=int(args.max_file_mb * 1e6),
            read_limits=ReadLimits(seconds=args.file_timeout),
            progress=progress,
        )
    except RagtuneError as error:
        print(f"rag-ingest: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rag-ingest: interrupted; completed files are kept, run again to finish the rest.", file=sys.stderr)
        return 130
    finally:
        progress.close()
        if store is not None:
            store.close()

    print(json.dumps(report.to_json()) if args.json else summary(report))
    landed = report.added or report.changed or report.unchanged or report.removed
    if not landed and not report.failed:
        print(
            f"rag-ingest: no supported files found (supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})",
            file=sys.stderr,
        )
    return 0 if landed else 1


def summary(report: IngestReport) -> str:
    """The human report: one line of counts, then one line per failed file and per symlink not followed."""
    verb = "would ingest (dry run, nothing written)" if report.dry_run else "ingested"
    counts = ", ".join(f"{len(getattr(report, name))} {name}" for name in ("added", "changed", "removed", "unchanged"))
    lines = [
        f"{verb}: {counts}; {report.chunks} chunks {'to embed' if report.dry_run else 'embedded'}; "
        f"{len(report.failed)} failed; "
        f"{len(report.skipped)} skipped ({report.seconds:.1f} s)"
    ]
    lines += [f"  failed  {item['path']}: {item['error']}" for item in report.failed]
    # Hidden and unsupported files are routine; a link that was not followed may be a file the user expected.
    lines += [f"  skipped {item['path']}: {item['reason']}" for item in report.skipped if "symlink" in item["reason"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
