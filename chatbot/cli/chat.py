"""`rag-chat [QUESTION]`: one answer, or an interactive loop without a question.

Exit codes: 0 answered, 1 the engine refused (no collection, unknown adapter...),
2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from chatbot.core.config import Settings
from chatbot.core.errors import RagtuneError, SettingsError
from chatbot.core.text import heading_path
from chatbot.options import AnswerOptions
from chatbot.rag.prompts import Strategy

if TYPE_CHECKING:
    from adapters.card import AdapterCard
    from chatbot.engine import Answer, ChatEngine


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag-chat", description="Ask the knowledge base a question.")
    parser.add_argument("question", nargs="?", help="the question (omit it for an interactive chat)")
    parser.add_argument("--no-retrieval", dest="use_retrieval", action="store_false", help="answer without the KB")
    adapter = parser.add_mutually_exclusive_group()
    adapter.add_argument("--adapter", metavar="NAME", help="answer with this LoRA adapter")
    adapter.add_argument("--no-adapter", dest="adapter", action="store_const", const=None, help="the base model")
    parser.add_argument("--strategy", choices=[s.value for s in Strategy], default=Strategy.ZERO_SHOT.value)
    parser.add_argument("--k", type=int, dest="top_k", help="passages to retrieve (default RAG_TOP_K)")
    parser.add_argument("--mode", choices=["dense", "hybrid"], help="retrieval mode (default: hybrid)")
    parser.add_argument("--no-abstain", dest="abstain", action="store_false", help="always generate, even when unsure")
    parser.add_argument(
        "--served", action="store_true", help="ask the served model (RAG_LLM_BASE_URL) next to the local one"
    )
    parser.add_argument("--probe", action="store_true", help="with --adapter: also measure that it is applied")
    parser.add_argument("--list-adapters", action="store_true", help="list the registered adapters and exit")
    parser.add_argument("--json", action="store_true", help="print one JSON object per answer")
    parser.epilog = (
        "In the interactive chat, /adapter NAME|none, /retrieval on|off and /strategy NAME change the "
        "settings for the next questions, without reloading the model."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rag-chat`."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.top_k is not None:
            Settings(top_k=args.top_k)  # the same limits as RAG_TOP_K
    except SettingsError as error:
        print(f"rag-chat: {error}", file=sys.stderr)
        return 2

    if args.list_adapters:
        return list_adapters(settings, args.json)

    from chatbot.build import build_engine  # loads torch: only once the arguments are known good

    try:
        with build_engine(settings, require_collection=args.use_retrieval) as engine:
            if args.question:
                ask(engine, args.question, [], args)
            else:
                chat_loop(engine, args)
    except RagtuneError as error:
        print(f"rag-chat: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def ask(engine: ChatEngine, question: str, history: list[tuple[str, str]], args: argparse.Namespace) -> Answer:
    """Answer one question: streamed to the terminal, or as one JSON object."""
    options = AnswerOptions(
        args.use_retrieval, args.adapter, args.strategy, args.top_k, args.mode, args.served, args.abstain
    )
    answer = None
    for item in engine.stream(question, history, **options.kwargs()):
        if isinstance(item, str):
            if not args.json:
                print(item, end="", flush=True)
        else:
            answer = item
    probe = engine.probe(args.adapter, served=args.served) if args.probe and args.adapter else None
    if args.json:
        print(json.dumps({**answer.to_json(), **({"probe": probe} if probe else {})}, ensure_ascii=False))
    else:
        print()
        for number, hit in enumerate(answer.sources, 1):
            print(f"  [{number}] {heading_path(hit.title, hit.section)} ({hit.source}, score {hit.score:.3f})")
        if probe:
            verdict = "applied" if probe["applied"] else "NOT changing the model"
            print(f"  adapter {args.adapter}: {verdict} (answer loss {probe['base_loss']} -> {probe['adapter_loss']})")
    return answer


def list_adapters(settings: Settings, as_json: bool) -> int:
    """Print the registry (cards only: no model is loaded)."""
    from adapters.registry import adapter_dirs, discover
    from chatbot.llm.loading import BUNDLED_LLM_NAME

    base = settings.llm_model or BUNDLED_LLM_NAME
    rows = [
        {
            "name": a.name,
            "path": str(a.path),
            "base_model": a.base_model,
            "problem": a.problem_with(base),
            **_facts(a.card),
        }
        for a in discover(adapter_dirs(settings))
    ]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
    for row in [] if as_json else rows:
        facts = ", ".join(f"{key} {row[key]}" for key in ("steps", "final_loss", "created") if row.get(key) is not None)
        print(
            f"{row['name']}: {row['path']} ({facts or 'no card'})"
            + (f"\n  cannot load: {row['problem']}" if row["problem"] else "")
        )
    if not rows and not as_json:
        print("no adapters registered: train one with rag-train-adapter, or set RAG_ADAPTERS_DIR")
    return 0


def _facts(card: AdapterCard) -> dict:
    return {key: getattr(card, key) for key in ("rank", "steps", "final_loss", "created")}


def chat_loop(engine: ChatEngine, args: argparse.Namespace) -> None:
    """Read questions until end of input; each answer sees the conversation so far."""
    history: list[tuple[str, str]] = []
    while True:
        try:
            question = input("" if args.json else "you> ").strip()  # --json: stdout is JSON lines only
        except EOFError:
            if not args.json:
                print()
            return
        if question in ("exit", "quit"):
            return
        if question.startswith("/"):
            print(switch(args, question), file=sys.stderr if args.json else sys.stdout)
        elif question:
            answer = ask(engine, question, history, args)
            history += [("user", question), ("assistant", answer.text)]


def switch(args: argparse.Namespace, command: str) -> str:
    """Apply one /command to the settings of the next questions; say what changed."""
    name, _, value = command[1:].partition(" ")
    value = value.strip()
    if name == "adapter" and value:
        args.adapter = None if value.lower() in ("none", "off") else value
        return f"adapter: {args.adapter or 'none (base model)'}"
    if name == "retrieval" and value in ("on", "off"):
        args.use_retrieval = value == "on"
        return f"retrieval: {value}"
    if name == "strategy" and value in [s.value for s in Strategy]:
        args.strategy = value
        return f"strategy: {value}"
    return "commands: /adapter NAME|none, /retrieval on|off, /strategy zero-shot|few-shot|cot, exit"


if __name__ == "__main__":
    sys.exit(main())
