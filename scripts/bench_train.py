"""Training throughput and peak memory of the demo-model configuration, one real `vllm-i2v train` run per row.

Rows: projector-only with a frozen tower, without and with the feature cache; LLM LoRA; QLoRA (NF4); the
full LLM; and LoRA on 2 ranks under DeepSpeed ZeRO-2 and ZeRO-3 (on CPU: DS_ACCELERATOR=cpu).
samples/s is transformers' `train_samples_per_second` (the training loop only: model loading and feature
extraction are reported apart); peak memory is the largest resident set of any process of the run.

Usage: python scripts/bench_train.py --model outputs/demo [--steps 8] [--batch 2] [--frames 8] [--only NAME ...]
(build the demo model first: vllm-i2v build configs/model/demo-random-clip-smollm2.yaml outputs/demo).
Prints a Markdown table; the README's training table comes from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "projector, frozen tower": {"trainable": {"projector": True}},
    "projector, frozen tower, feature cache": {"trainable": {"projector": True}, "feature_cache": True},
    "projector + LLM LoRA": {"trainable": {"projector": True, "llm": "lora"}},
    "projector + LLM QLoRA (NF4)": {"trainable": {"projector": True, "llm": "lora"}, "quantization": "nf4"},
    "projector + full LLM": {"trainable": {"projector": True, "llm": "full"}},
    "LLM LoRA, 2 ranks, ZeRO-2": {"trainable": {"projector": True, "llm": "lora"}, "ranks": 2, "deepspeed": "zero2"},
    "LLM LoRA, 2 ranks, ZeRO-3": {"trainable": {"projector": True, "llm": "lora"}, "ranks": 2, "deepspeed": "zero3"},
}


def make_dataset(root: Path, count: int = 16) -> Path:
    """Short 224x224 clips of moving squares, with one question and answer each (LLaVA layout)."""
    from vllm_i2v.video.writer import write_video

    (root / "videos").mkdir(parents=True, exist_ok=True)
    rows, rng = [], np.random.default_rng(0)
    for i in range(count):
        frames = np.full((16, 224, 224, 3), 20, dtype=np.uint8)
        color = rng.integers(60, 255, 3)
        for t in range(16):
            x = 10 + t * 12
            frames[t, 80:140, x : x + 60] = color
        write_video(root / "videos" / f"{i}.mp4", frames, fps=8)
        rows.append(
            {
                "id": str(i),
                "video": f"{i}.mp4",
                "conversations": [
                    {"from": "human", "value": "<video>\nDescribe the video."},
                    {
                        "from": "gpt",
                        "value": "A colored square moves from the left to the right over a dark background.",
                    },
                ],
            }
        )
    (root / "train.json").write_text(json.dumps(rows))
    return root


def run(
    name: str, variant: dict, args, data: Path, work: Path, extra_training: dict | None = None, cuda: bool = False
) -> dict:
    """One real `vllm-i2v train` run of ``variant``; its throughput and peak memory (the largest resident set of its
    processes; with ``cuda``, also the largest rank's peak GPU memory allocated, as the run prints it)."""
    out = work / re.sub(r"\W+", "-", name).strip("-")
    config = {
        "model": str(Path(args.model).resolve()),
        "data": {
            "train": str(data / "train.json"),
            "video_root": str(data / "videos"),
            "num_frames": args.frames,
            "sampler": "uniform",
        },
        "trainable": variant["trainable"],
        "training": {
            "output_dir": str(out),
            "max_steps": args.steps,
            "per_device_train_batch_size": args.batch,
            "learning_rate": 1e-4,
            "logging_steps": 1,
            "save_strategy": "no",
            "dataloader_num_workers": 0,
            **(extra_training or {}),
        },
    }
    if variant.get("feature_cache"):
        config["feature_cache"] = str(work / "feature-cache")
    if variant.get("quantization"):
        config["quantization"] = variant["quantization"]
    if variant.get("deepspeed"):
        config["training"]["deepspeed"] = str(ROOT / "configs" / "deepspeed" / f"{variant['deepspeed']}.json")
    path = work / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if variant.get("ranks"):
        env.update(OMP_NUM_THREADS="1", NUM_GPUS=str(variant["ranks"]), MASTER_PORT="29820")
        if not cuda:
            env["DS_ACCELERATOR"] = "cpu"
        command = [str(ROOT / "scripts" / "train.sh"), str(path)]
    else:
        command = [sys.executable, "-m", "vllm_i2v.cli", "train", str(path)]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *command], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    peak = re.findall(r"PEAK_RSS_KIB=(\d+)", result.stderr)
    if result.returncode != 0:
        lines = [x for x in (result.stderr + result.stdout).splitlines() if x.strip() and "PEAK_RSS_KIB" not in x]
        return {"name": name, "error": lines[-1][:160] if lines else f"exit code {result.returncode}"}
    metrics = _train_metrics(result.stdout + result.stderr)
    cache = re.search(r"feature cache .*?: (\{.*?\})", result.stdout)
    gpu = re.findall(r"peak GPU memory \(rank \d+\): ([\d.]+) GiB allocated", result.stdout)
    return {
        "name": name,
        "samples_per_s": metrics.get("train_samples_per_second"),
        "train_s": metrics.get("train_runtime"),
        "wall_s": wall,
        "peak_gib": int(peak[-1]) / 2**20 if peak else None,
        "gpu_peak_gib": max(map(float, gpu), default=None),
        "cache": cache.group(1) if cache else "",
    }


# Runs the command in a fresh process whose only children are the run's: their largest resident set is the run's.
PEAK_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(f'PEAK_RSS_KIB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); sys.exit(code)"
)


def _train_metrics(log: str) -> dict:
    found = re.findall(r"\{'train_runtime': '([\d.]+)', 'train_samples_per_second': '([\d.]+)'", log)
    if not found:
        return {}
    runtime, rate = found[-1]
    return {"train_runtime": float(runtime), "train_samples_per_second": float(rate)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="VideoLLM checkpoint (the demo model)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--only", nargs="*", default=None, help="run only these rows (names as in the table)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_dataset(work / "data")
        rows = [run(name, v, args, data, work) for name, v in VARIANTS.items() if not args.only or name in args.only]
    print(
        f"{args.steps} steps, batch {args.batch} per rank, {args.frames} frames per video, {os.cpu_count()} CPU cores\n"
    )
    print("| configuration | samples/s | training loop | whole run | peak memory (largest process) |")
    print("|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['name']} | failed: {row['error']} | | | |")
            continue
        peak = f"{row['peak_gib']:.2f} GiB" if row["peak_gib"] else "?"
        print(
            f"| {row['name']} | {row['samples_per_s']:.2f} | {row['train_s']:.1f} s | {row['wall_s']:.1f} s | {peak} |"
        )


if __name__ == "__main__":
    main()
