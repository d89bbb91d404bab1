"""`rag-search QUERY`: retrieval alone, no generation, to see what the chatbot would read.

Exit codes: 0 on success (even with no hits), 1 when the store or a model cannot
be used, 2 for usage or settings errors.
"""

from __future__ import annotations

import argparse
import json
import sys

from chatbot.core.config import TOP_K_RANGE, Settings
from chatbot.core.errors import InvalidOptionError, RagtuneError, SettingsError
from chatbot.llm.loading import embed_model_name, load_embeddings
from chatbot.rag.abstain import threshold
from chatbot.rag.retrieval import Hit, RetrievalMode, Retriever
from chatbot.rag.store import Store

PREVIEW_CHARS = 160


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag-search", description="Show the chunks retrieval finds for a query (no answer is generated)."
    )
    parser.add_argument("query", metavar="QUERY", help="the question or keywords to search for")
    parser.add_argument("--k", type=int, help="how many hits (default: RAG_TOP_K or 4)")
    parser.add_argument(
        "--mode",
        choices=[mode.value for mode in RetrievalMode],
        default=RetrievalMode.HYBRID.value,
        help="dense: embeddings only; hybrid: embeddings and keywords fused (default)",
    )
    parser.add_argument("--source", action="append", metavar="S", help="only search this source (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the hits")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rag-search`."""
    args = build_parser().parse_args(argv)
    low, high = TOP_K_RANGE
    if args.k is not None and not low <= args.k <= high:
        print(f"rag-search: --k {args.k} is not allowed: expected a whole number from {low} to {high}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"rag-search: {error}", file=sys.stderr)
        return 2

    store = None
    try:
        store = Store.open(settings)
        store.require_points()  # before loading the model, which takes seconds
        store.check_embedding(embed_model_name(settings))
        retriever = Retriever(store, load_embeddings(settings), mode=args.mode, top_k=settings.top_k)
        hits = retriever.retrieve(args.query, k=args.k, sources=args.source)
        cut, calibrated = threshold(store)
    except InvalidOptionError as error:
        print(f"rag-search: {error}", file=sys.stderr)
        return 2
    except RagtuneError as error:
        print(f"rag-search: {error}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()

    if args.json:
        shown = {"query": args.query, "mode": args.mode, "hits": [hit.to_json() for hit in hits]}
        # The cut the chatbot would abstain under: the collection's calibrated one, else the built-in constant.
        shown |= {"abstain_threshold": cut, "abstain_calibrated": calibrated}
        print(json.dumps(shown))
    else:
        print(render(hits) if hits else "no hits (the filters may exclude every chunk)")
    return 0


def render(hits: list[Hit]) -> str:
    """A numbered list: score, source and section, then the start of the text."""
    lines = []
    for number, hit in enumerate(hits, 1):
        where = f"{hit.source} > {hit.section}" if hit.section else hit.source
        page = f" (page {hit.page})" if hit.page is not None else ""
        text = " ".join(hit.text.split())
        preview = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"
        lines += [f"{number}. [{hit.score:.3f}, cosine {hit.dense_score:.3f}] {where}{page}", f"   {preview}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
