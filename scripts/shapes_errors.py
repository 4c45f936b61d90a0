"""Where a model fails on the shapes world: accuracy per question kind and number of objects in the clip.

    python scripts/shapes_errors.py outputs/shapes/eval/bundled/test/predictions.jsonl --split test --seed 0

Reads the predictions ``scripts/shapes_table.py`` (or ``vllm-i2v eval shapes``) wrote; each clip's scene is
rebuilt from the seed the data was written with (``vllm-i2v data shapes --seed``), so nothing else is needed.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from vllm_i2v.data.shapes import scene_for
from vllm_i2v.eval.answers import exact_match


def kind_of(row: dict) -> str:
    column = row.get("column") or row.get("type")
    if column == "attribute":
        return "attribute: colour of a shape" if row["question"].startswith("What color") else "attribute: shape of a colour"
    return column


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hits, counts = Counter(), Counter()
    for line in args.predictions.read_text().splitlines():
        row = json.loads(line)
        index = int(Path(row["video"]).stem.rsplit("_", 1)[1])
        key = (kind_of(row), len(scene_for(args.seed, index, args.split).objects))
        counts[key] += 1
        hits[key] += exact_match(row["pred"], row["answer"])
    print("| question | 1 object | 2 objects | 3 objects |")
    print("|---|---:|---:|---:|")
    for kind in sorted({k for k, _ in counts}):
        cells = [f"{100 * hits[kind, n] / counts[kind, n]:.0f}% ({counts[kind, n]})" if counts[kind, n] else "–" for n in (1, 2, 3)]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
