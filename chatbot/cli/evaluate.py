"""`rag-eval QA.jsonl`: run a question set over the grid and write report.json, report.md and report.png.

Exit codes: 0 report written, 1 the run was refused (bad question set, unknown source,
no collection, unknown adapter...), 2 usage errors, 130 interrupted (finished answers
stay cached, so the same command resumes).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chatbot.core.config import Settings
from chatbot.core.errors import RagtuneError, SettingsError
from chatbot.eval.metrics import METRICS
from chatbot.rag.prompts import Strategy

if TYPE_CHECKING:
    from chatbot.options import AnswerOptions

AXES = ("retrieval", "adapter", "strategy")

EPILOG = """\
The grid: --grid names the axes that vary (default: retrieval,adapter):
  retrieval  off and on (not varied: on)
  adapter    the base model and each loaded adapter, or those in --adapters (not varied: base,
             or the one adapter named)
  strategy   zero-shot, few-shot, cot, or those in --strategies (not varied: zero-shot, or the
             one named)
With one adapter loaded, the default grid has 4 configurations.

Every finished answer is cached in $RAG_CACHE_DIR/eval/results.jsonl, keyed by the question's
text, the configuration, the model, the adapter, the collection's contents, the prompts and the
decoding settings: a re-run asks the model only what changed, and Ctrl-C loses nothing.

Examples:
  rag-eval data/kb_qa.jsonl
  rag-eval data/kb_qa.jsonl --grid retrieval,strategy --limit 10 --out /tmp/eval
  rag-eval data/kb_qa.jsonl --grid retrieval,adapter,strategy --strategies zero-shot,cot --json
  rag-eval --compare runs/before runs/after                (two report folders: what moved, is it noise)
  rag-eval --compare runs/one --configs "base model" support-rag   (two configurations of one run)
  rag-eval data/kb_qa.jsonl --votes votes.jsonl   (the Arena page's votes against the metrics)
"""


def _metrics_help() -> str:
    # Built from the table that report.md lists too, so the help and the report never disagree.
    lines = ["The report's columns (one row per configuration; report.md ends with the same list):"]
    for metric in METRICS:
        better = {"high": "higher is better", "low": "lower is better"}.get(metric.better, "neither is better")
        item = f"{metric.header} ({better}): {metric.how}."
        lines.append(
            textwrap.fill(item, width=100, initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False)
        )
    lines.append(
        textwrap.fill(
            'A refusal is the engine abstaining, or an answer that declines ("I don\'t know", "the help centre '
            'does not cover ..."). A metric that does not apply is left blank, never scored 0.',
            width=100,
        )
    )
    return "\n".join(lines)


def _list_of(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated list of names from `allowed`."""

    def names(value: str) -> tuple[str, ...]:
        chosen = tuple(name.strip() for name in value.split(",") if name.strip())
        if not chosen or any(name not in allowed for name in chosen):
            raise argparse.ArgumentTypeError(f"{value!r}: expected a comma-separated list of {', '.join(allowed)}")
        return chosen

    return names


_axes = _list_of(AXES)
_strategies = _list_of([strategy.value for strategy in Strategy])


def _names(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{value!r}: expected adapter names separated by commas")
    return names


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number, 1 or more")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag-eval",
        description="Run a question set through each configuration of the grid and report which lever helped.",
        epilog=EPILOG + "\n" + _metrics_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "questions",
        metavar="QA.jsonl",
        nargs="?",
        help="question set, one JSON object a line (DESIGN.md); with --compare, the set cache snapshots are scored on",
    )
    parser.add_argument(
        "--grid",
        type=_axes,
        default=("retrieval", "adapter"),
        metavar="AXES",
        help="axes to vary, comma-separated: retrieval, adapter, strategy (default: retrieval,adapter)",
    )
    parser.add_argument(
        "--adapters", type=_names, metavar="NAME,...", help="only these loaded adapters (default: every loaded adapter)"
    )
    parser.add_argument(
        "--served-adapters",
        type=_names,
        metavar="NAME,...",
        help="with RAG_LOCAL_LLM next to a server: these served adapters (or the served base model, by its name)",
    )
    parser.add_argument(
        "--strategies",
        type=_strategies,
        metavar="NAME,...",
        help="prompt strategies: zero-shot, few-shot, cot (default: all when varied, else zero-shot)",
    )
    parser.add_argument("--limit", type=_positive, metavar="N", help="only the first N questions (a quick run)")
    parser.add_argument(
        "--batch",
        type=_positive,
        metavar="N",
        help="questions generated together (default 8); 1 measures each answer's own latency",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("eval-report"),
        metavar="DIR",
        help="where report.json, report.md and report.png go (default: eval-report)",
    )
    parser.add_argument(
        "--no-cache",
        dest="use_cache",
        action="store_false",
        help="ask the model again even when a cached answer exists (new answers are still cached)",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        help="compare two runs instead of running one: report folders (rag-eval --out) or cache snapshots "
        "(copies of results.jsonl, scored on QA.jsonl); one folder with --configs compares two of its configurations",
    )
    parser.add_argument(
        "--configs",
        nargs=2,
        metavar=("LABEL_A", "LABEL_B"),
        help="with --compare: this configuration of A against this one of B, each a label or a part of exactly one "
        '("base model", "support-rag"); default: every label both runs share',
    )
    parser.add_argument(
        "--votes",
        type=Path,
        metavar="FILE",
        help="no run: read the Arena page's votes (its .jsonl export or votes.sqlite) and show, per pair of "
        "configurations, where people and the metrics of QA.jsonl disagree",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rag-eval`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare is not None:
        if len(args.compare) > 2:
            parser.error(f"--compare takes one or two runs, got {len(args.compare)}")
        return compare(args)
    if args.configs is not None:
        parser.error("--configs goes with --compare")
    if args.questions is None:
        parser.error("give a question set (QA.jsonl), or two runs to compare with --compare A B")
    if args.votes is not None:
        from chatbot.cli.votes import report_votes

        return report_votes(args.votes, Path(args.questions), as_json=args.json)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"rag-eval: {error}", file=sys.stderr)
        return 2

    from chatbot.eval.run import BATCH, ResultCache, default_configs, load_questions, run_evaluation, write_report

    try:
        # Read the whole set first: a typo on line 40 fails now, not after the models load.
        questions = load_questions(args.questions)[: args.limit]
    except RagtuneError as error:
        print(f"rag-eval: {error}", file=sys.stderr)
        return 1

    from chatbot.build import build_engine  # loads torch: only once the arguments and questions are good

    cache, bars = None, _Bars()
    try:
        with build_engine(settings) as engine:
            configs = default_configs(
                engine,
                args.grid,
                adapters=args.adapters,
                served_adapters=args.served_adapters,
                strategies=args.strategies,
            )
            if "adapter" in args.grid and all(config.adapter is None for config in configs):
                print("rag-eval: no adapter is loaded, so the adapter axis has only the base model.", file=sys.stderr)
            cache = ResultCache(settings.cache_dir / "eval" / "results.jsonl", read=args.use_cache)
            bars.start(configs, len(questions))
            report = run_evaluation(
                engine,
                questions,
                configs,
                cache=cache,
                progress=bars,
                question_set=args.questions,
                batch=args.batch or BATCH,
            )
            bars.close()
        try:
            paths = write_report(report, args.out)
        except OSError as error:
            print(
                f"rag-eval: cannot write the report to {args.out} ({error}): pick another --out DIR.", file=sys.stderr
            )
            return 1
    except RagtuneError as error:
        bars.close()
        print(f"rag-eval: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # the answer cache, say, on a full disk or a read-only RAG_CACHE_DIR
        bars.close()
        print(f"rag-eval: {error}: free space, or point RAG_CACHE_DIR at a writable folder.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bars.close()
        saved = f"{len(cache)} results cached in {cache.path} ({cache.written} new)" if cache else "nothing cached"
        print(f"\nrag-eval: interrupted; {saved}. Run the same command again to resume.", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report.summary(), ensure_ascii=False))
    else:
        print(report.to_markdown())
    fresh = len(questions) * len(configs) - report.cached
    print(
        f"rag-eval: {fresh} answers generated, {report.cached} from the cache; wrote "
        + ", ".join(str(path) for path in paths.values()),
        file=sys.stderr,
    )
    return 0


def compare(args: argparse.Namespace) -> int:
    """`rag-eval --compare A B`: the questions that moved, each metric's paired interval, and the summary."""
    from chatbot.eval.compare import compare_runs, load_run
    from chatbot.eval.run import load_questions
    from chatbot.eval.wording import to_text

    try:
        questions = load_questions(args.questions) if args.questions else None
        runs = [load_run(path, questions) for path in args.compare]
        first, second = runs if len(runs) == 2 else (runs[0], runs[0])
        comparison = compare_runs(first, second, configs=tuple(args.configs) if args.configs else None)
    except RagtuneError as error:
        print(f"rag-eval: {error}", file=sys.stderr)
        return 1
    print(json.dumps(comparison.to_json(), ensure_ascii=False) if args.json else to_text(comparison), end="\n")
    return 0


class _Bars:
    """A tqdm bar per configuration on stderr, each counting that configuration's questions."""

    def __init__(self) -> None:
        self.bar = None
        self.config: AnswerOptions | None = None
        self.configs: list[AnswerOptions] = []
        self.per_config = 0

    def start(self, configs: list[AnswerOptions], per_config: int) -> None:
        self.configs, self.per_config = configs, per_config

    def __call__(self, done: int, total: int, config: AnswerOptions) -> None:
        from tqdm import tqdm

        if config != self.config:
            self.close()
            number = self.configs.index(config) + 1
            self.bar = tqdm(
                total=self.per_config, desc=f"[{number}/{len(self.configs)}] {config.label}", unit="q", file=sys.stderr
            )
            self.config = config
        self.bar.update(1)
        if self.bar.n >= self.per_config:
            self.close()  # now, so its elapsed time is this configuration's alone

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


if __name__ == "__main__":
    sys.exit(main())
