"""Split the retrieval question sets into a tuning half and a held-out half, once, and record the split.

Defaults are chosen on the tuning halves only; the held-out halves are what the
numbers in the report stand on. The split is stratified by `kind` (each kind is
shuffled with a fixed seed and dealt alternately), so both halves hold the same
mix of facts, how-tos, multi-hop and unanswerable questions. Re-running it
reproduces bench/eval/splits.json exactly; add questions, and the split of the
old ones does not move only if their sets keep their order, so commit the file.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 22
SETS = {
    "data/kb": ["data/kb_qa.jsonl", "bench/eval/questions/kb_customer.jsonl"],
    "plausible": ["tests/data/plausible_qa.jsonl", "bench/eval/questions/plausible_customer.jsonl"],
}
OUT = ROOT / "bench" / "eval" / "splits.json"


def split(rows: list[dict], seed: int) -> dict[str, list[str]]:
    """ids per half, stratified by kind: within each kind, shuffled, then dealt tune/held-out in turn."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_kind[row["kind"]].append(row["id"])
    rng = random.Random(seed)
    halves: dict[str, list[str]] = {"tune": [], "heldout": []}
    turn = 0
    for kind in sorted(by_kind):
        ids = by_kind[kind]
        rng.shuffle(ids)
        for qid in ids:
            halves["tune" if turn % 2 == 0 else "heldout"].append(qid)
            turn += 1  # carried across kinds, so odd-sized kinds do not all favour the tuning half
    return {half: sorted(ids) for half, ids in halves.items()}


def main() -> None:
    splits = {}
    for kb, files in SETS.items():
        rows = [json.loads(line) for file in files for line in (ROOT / file).read_text().splitlines() if line.strip()]
        splits[kb] = {"files": files, "seed": SEED, **split(rows, SEED)}
    OUT.write_text(json.dumps(splits, indent=1) + "\n")
    for kb, halves in splits.items():
        print(f"{kb}: {len(halves['tune'])} tuning, {len(halves['heldout'])} held out")


if __name__ == "__main__":
    main()
