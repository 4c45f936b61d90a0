"""The shapes-world accuracy table: every model on the test, heldout-combos and long splits, by question type, and
(with --breakdown) where the first model fails, by the number of objects in the clip.

Each cell comes from a `vllm-i2v eval shapes*` run (exact match, greedy, one question at a time), kept under
OUT/NAME/TASK (resumable: a finished run is read, not redone); `vllm-i2v eval compare` puts each split's runs side
by side in OUT/compare-SPLIT (compare.md: every setting in which they differ; compare.png). The table is written
to OUT/table.md and, with --readme, between the README's shapes-table markers (or those --block names).

    python scripts/shapes_table.py --model 'bundled=vllm_i2v/bundled/shapes-smollm2=the bundled model' \\
        --model 'mlp=outputs/shapes-mlp/video/final=frozen tower + mlp' --breakdown --readme README.md
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from readme_table import replace_block

from vllm_i2v.atomic import write_text_atomic
from vllm_i2v.cli import main as vllm_i2v
from vllm_i2v.data.shapes import scene_of_file
from vllm_i2v.eval.answers import exact_match
from vllm_i2v.eval.shapes import COLUMNS

TASKS = {"test": "shapes", "heldout-combos": "shapes-heldout-combos", "long": "shapes-long"}


def run(name: str, checkpoint: str, split: str, args) -> dict:
    """The metrics of ``checkpoint`` on ``split`` (evaluated now unless OUT/NAME/TASK holds a finished run)."""
    out = Path(args.out) / name / TASKS[split]
    if not (out / "metrics.json").is_file():
        command = ["eval", TASKS[split], "--model", checkpoint, "--out", str(out), "--data", args.data]
        command += ["--batch-size", str(args.batch_size), "--feature-cache", str(Path(args.out) / "features")]
        if vllm_i2v(command + (["--bf16"] if args.bf16 else [])) != 0:
            raise SystemExit(f"evaluating {name} on {split} failed")
    return json.loads((out / "metrics.json").read_text())


def accuracy_table(results: dict[str, dict[str, dict]], labels: dict[str, str]) -> str:
    lines = [
        "| model | split | " + " | ".join(COLUMNS) + " | visual tokens |",
        "|---|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for name, splits in results.items():
        for split, metrics in splits.items():
            by_type = metrics["judge_free"]["exact-match"]["by_type"]
            cells = [f"{by_type[c]['mean']:.1f} ({by_type[c]['n']})" if c in by_type else "–" for c in COLUMNS]
            lines.append(f"| {labels[name]} | {split} | " + " | ".join(cells) + f" | {metrics['visual_tokens']} |")
    return "\n".join(lines)


def kind_of(row: dict) -> str:
    if row["type"] == "attribute":
        return (
            "attribute: colour of a shape"
            if row["question"].startswith("What color")
            else "attribute: shape of a colour"
        )
    return row["type"]


def breakdown(predictions: Path, split: str, seed: int = 0) -> str:
    """Accuracy per question kind and number of objects in the clip (each scene rebuilt from its seed), and how many
    wrong attribute answers name a colour or shape in the clip (binding) rather than one absent (perception)."""
    hits, counts = Counter(), Counter()
    wrong_attributes = bound_elsewhere = 0
    for line in predictions.read_text().splitlines():
        row = json.loads(line)
        objects = scene_of_file(row["video"], split, seed).objects
        key = (kind_of(row), len(objects))
        counts[key] += 1
        right = exact_match(row["pred"], row["answer"])
        hits[key] += right
        if row["type"] == "attribute" and not right:
            wrong_attributes += 1
            bound_elsewhere += any(exact_match(row["pred"], a) for o in objects for a in (o.color, o.shape))
    lines = ["| question | 1 object | 2 objects | 3 objects |", "|---|---:|---:|---:|"]
    for kind in sorted({k for k, _ in counts}):
        cells = [
            f"{100 * hits[kind, n] / counts[kind, n]:.0f}% ({counts[kind, n]})" if counts[kind, n] else "–"
            for n in (1, 2, 3)
        ]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    binding = "name a colour or shape in the clip (binding, not perception)"
    lines.append(f"\nWrong attribute answers that {binding}: {bound_elsewhere} of {wrong_attributes}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT[=LABEL]; repeatable")
    parser.add_argument("--splits", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--data", default="data/shapes", help="where the splits are (written there when missing)")
    parser.add_argument("--out", default="outputs/shapes/eval", help="the runs, the shared feature cache, table.md")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with bf16 units)")
    parser.add_argument("--breakdown", action="store_true", help="also: the first model's test answers by objects")
    parser.add_argument("--readme", help="rewrite the table's block (and shapes-breakdown) in this file")
    parser.add_argument("--block", default="shapes-table", help="the README block the table goes in")
    args = parser.parse_args()
    results, labels = {}, {}
    for item in args.model:
        name, checkpoint, *label = item.split("=", 2)
        labels[name] = label[0] if label else name
        results[name] = {split: run(name, checkpoint, split, args) for split in args.splits}
    for split in args.splits:
        runs = [str(Path(args.out) / name / TASKS[split]) for name in results]
        if vllm_i2v(["eval", "compare", *runs, "--out", str(Path(args.out) / f"compare-{split}")]) != 0:
            raise SystemExit(f"comparing the runs on {split} failed")
    table = accuracy_table(results, labels)
    print(table)
    write_text_atomic(Path(args.out) / "table.md", table + "\n")
    if args.breakdown:
        first = args.model[0].split("=", 1)[0]
        errors = breakdown(Path(args.out) / first / TASKS["test"] / "predictions.jsonl", "test")
        print(errors)
        write_text_atomic(Path(args.out) / "breakdown.md", errors + "\n")
    if args.readme:
        replace_block(args.readme, args.block, table)
        if args.breakdown:
            replace_block(args.readme, "shapes-breakdown", errors)


if __name__ == "__main__":
    main()
