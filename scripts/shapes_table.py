"""Evaluate models on the held-out shapes-world benchmark and write the accuracy table (into the README).

Each model answers the first N questions of each column (attribute, counting, direction, moving-or-still,
temporal order) of a split's ``{split}_qa.json`` (``vllm-i2v data shapes``), greedily, and is scored by
normalized exact match. Predictions are resumable (``OUT/NAME/SPLIT/predictions.jsonl``); the frozen tower's
features are cached in ``OUT/features`` and shared by every model with the same tower.

    python scripts/shapes_table.py --data data/shapes --out outputs/shapes/eval \\
        --model bundled=vllm_i2v/bundled/shapes-smollm2 --model mlp=outputs/shapes-mlp/video/final \\
        --readme README.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from readme_table import replace_block

from vllm_i2v.atomic import write_text_atomic
from vllm_i2v.eval import predict
from vllm_i2v.eval.shapes import COLUMNS, benchmark_rows, score
from vllm_i2v.models import VideoLLMProcessor
from vllm_i2v.models.checkpoint import load_model


def evaluate(name: str, path: str, args) -> dict:
    model, processor = load_model(path).eval(), VideoLLMProcessor.from_pretrained(path)
    results = {}
    for split in args.splits:
        rows = benchmark_rows(Path(args.data) / f"{split}_qa.json", args.per_column if split == "test" else args.per_column_extra)
        run_dir = Path(args.out) / name / split
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            stats = predict(model, processor, rows, Path(args.data) / "videos", run_dir / "predictions.jsonl",
                            batch_size=args.batch_size, feature_cache=Path(args.out) / "features")  # fmt: skip
        metrics = {"model": path, "split": split, "scores": score(run_dir / "predictions.jsonl"),
                   "visual_tokens": model.config.num_visual_tokens(model.config.num_frames),
                   "frames": model.config.num_frames, "seconds": round(time.perf_counter() - started, 1),
                   "missing": stats["missing"]}  # fmt: skip
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
        results[split] = metrics
        print(name, split, {c: s["accuracy"] for c, s in metrics["scores"].items()}, flush=True)
    return results


def table(results: dict[str, dict], descriptions: dict[str, str]) -> str:
    lines = [
        "| model | split | " + " | ".join(COLUMNS) + " | visual tokens |",
        "|---|---|" + "---:|" * len(COLUMNS) + "---:|",
    ]
    for name, splits in results.items():
        for split, metrics in splits.items():
            cells = [
                f"{s['accuracy']:.1f} ({s['n']})" if s["accuracy"] is not None else "–"
                for s in (metrics["scores"][c] for c in COLUMNS)
            ]
            lines.append(f"| {descriptions.get(name, name)} | {split} | " + " | ".join(cells) + f" | {metrics['visual_tokens']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/shapes", help="folder with {split}_qa.json and videos/")
    parser.add_argument("--out", default="outputs/shapes/eval")
    parser.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT[=DESCRIPTION]; repeatable")
    parser.add_argument("--splits", nargs="+", default=["test"], help="test, heldout-combos, long")
    parser.add_argument("--per-column", type=int, default=500, help="questions per column on the test split")
    parser.add_argument("--per-column-extra", type=int, default=200, help="questions per column on other splits")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with bf16 units)")
    parser.add_argument("--readme", help="replace the table between the shapes-table markers in this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    import transformers

    transformers.logging.set_verbosity_error()
    results, descriptions = {}, {}
    for item in args.model:
        name, path, *description = item.split("=", 2)
        descriptions[name] = description[0] if description else name
        results[name] = evaluate(name, path, args)
    markdown = table(results, descriptions)
    print(markdown)
    write_text_atomic(Path(args.out) / "table.md", markdown + "\n")
    if args.readme:
        replace_block(args.readme, "shapes-table", markdown)


if __name__ == "__main__":
    main()
