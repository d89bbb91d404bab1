"""`rag-train-adapter PAIRS.jsonl --name NAME`: train a LoRA adapter on the generator and register it.

The pairs file is checked line by line before the model loads, so a bad line fails in
a second. `--merge-to DIR` also writes the base model with the adapter merged in, for
serving engines that do not take adapters; without PAIRS it merges an adapter that is
already registered. Exit codes: 0 done, 1 a problem the message explains, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from adapters.card import AdapterCard
from chatbot.core.config import Settings
from chatbot.core.errors import RagtuneError, SettingsError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag-train-adapter",
        description="Fine-tune a LoRA adapter on question/answer pairs (loss on the answers only) and register it.",
    )
    parser.add_argument("pairs", nargs="?", type=Path, help="jsonl of pairs (omit it to only --merge-to)")
    parser.add_argument("--name", required=True, help="the adapter's name (its folder under --out)")
    parser.add_argument("--out", type=Path, help="where adapters live (default: RAG_ADAPTERS_DIR)")
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps (default 200)")
    parser.add_argument("--batch-size", type=int, default=1, help="pairs per step, accumulated (default 1)")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16); alpha is twice the rank")
    parser.add_argument("--targets", default="all-linear", help="comma-separated module names, or all-linear")
    parser.add_argument("--max-tokens", type=int, default=1536, help="skip pairs longer than this (default 1536)")
    parser.add_argument("--eval-fraction", type=float, default=0.1, help="held-out share of pairs (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="for the split, the order and the LoRA init")
    parser.add_argument("--checkpoint-every", type=int, default=25, help="steps between checkpoints (default 25)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint of NAME")
    parser.add_argument("--merge-to", type=Path, metavar="DIR", help="also write a merged full model to DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the card as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rag-train-adapter`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not _NAME.match(args.name):
        parser.error(f"--name {args.name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if args.pairs is None and args.merge_to is None:
        parser.error("give a PAIRS.jsonl file to train on, or --merge-to DIR to merge a registered adapter")
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"rag-train-adapter: {error}", file=sys.stderr)
        return 2
    try:
        return run(args, settings)
    except RagtuneError as error:
        print(f"rag-train-adapter: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rag-train-adapter: interrupted; --resume continues from the last checkpoint.", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.pairs import load_pairs
    from adapters.registry import adapter_dirs, discover, find
    from adapters.training.train import TrainConfig, train

    out = args.out or settings.adapters_dir
    card = None
    if args.pairs is not None:
        pairs = load_pairs(args.pairs)  # every line checked before the model loads
        config = TrainConfig(
            rank=args.rank,
            alpha=2 * args.rank,
            target_modules=args.targets if args.targets == "all-linear" else args.targets.split(","),
            learning_rate=args.lr,
            steps=args.steps,
            batch_size=args.batch_size,
            eval_fraction=args.eval_fraction,
            max_tokens=args.max_tokens,
            checkpoint_every=args.checkpoint_every,
            seed=args.seed,
        )
        from chatbot.llm.loading import load_generator  # imports torch

        card = train(
            load_generator(settings),
            pairs,
            config,
            out / args.name,
            data_path=str(args.pairs),
            resume=args.resume,
            progress=not args.quiet,
        )
        _report(card, out / args.name, args.json)
    if args.merge_to is not None:
        from adapters.loading import merge
        from chatbot.llm.loading import load_generator

        adapter = find(discover([*adapter_dirs(settings), out]), args.name)
        local = load_generator(settings)  # a fresh copy: merging changes the weights it is given
        if problem := adapter.problem_with(local.name):
            raise RagtuneError(problem)
        merge(local.model, local.tokenizer, adapter, args.merge_to)
        print(f"merged {adapter.name} into {local.name}: {args.merge_to}", file=sys.stderr)
    return 0


def _report(card: AdapterCard, folder: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps({key: value for key, value in card.to_json().items() if key != "probe"}, indent=2))
        return
    held = card.held_out
    print(f"adapter {card.name} -> {folder}")
    print(f"  {card.steps} steps in {card.extra.get('train_seconds')} s, final training loss {card.final_loss}")
    if held["pairs"]:
        print(
            f"  held-out answer loss: base {held['base_loss']} -> adapter {held['adapter_loss']} ({held['pairs']} pairs)"
        )


if __name__ == "__main__":
    sys.exit(main())
