"""Predicted against measured peak memory: `vllm-i2v plan` for a matrix of real training configurations, each then run
for real (`vllm-i2v train`, a few steps) on this machine.

On a CPU the measurement is the peak resident memory of the largest process of the run (its ranks under DeepSpeed):
everything the process holds — the Python runtime and libraries, the weights, gradients, optimizer states,
activations, the data, the freed memory malloc keeps — so the plan's CPU prediction adds the runtime it measures in
its own process (Python, torch, transformers, peft, DeepSpeed imported) and malloc's kept heap. What RSS cannot see:
memory of a GPU. With `--device cuda` the runs train on this machine's GPUs and the measurement is
`torch.cuda.max_memory_allocated()` of the largest rank, as `vllm-i2v train` prints it; the table goes to the
README's GPU block.

    python scripts/bench_plan.py --readme README.md                 # the matrix, ~5 min on 2 CPU cores
    python scripts/bench_plan.py --device cuda --readme README.md   # on a GPU machine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_train import make_dataset, run
from readme_table import publish

from vllm_i2v.bundled import DEFAULT_MODEL
from vllm_i2v.data import load_samples
from vllm_i2v.models import VideoLLMConfig, VideoLLMProcessor
from vllm_i2v.plan import Setup, gib, plan

ROOT = Path(__file__).resolve().parents[1]

# name: (model, set-up of the run; what trains and how)
MATRIX = {
    "bundle size, LoRA, 8 frames x 4": ("bundle", Setup(frames=8, batch=4, llm="lora", dtype="fp32")),
    "bundle size, LoRA, 32 frames x 1, bf16": ("bundle", Setup(frames=32, batch=1, llm="lora", dtype="bf16")),
    "bundle size, QLoRA, 8 frames x 4": ("bundle", Setup(frames=8, batch=4, llm="qlora", dtype="fp32")),
    "bundle size, full LLM, 4 frames x 2": ("bundle", Setup(frames=4, batch=2, llm="full", dtype="fp32")),
    "bundle size, LoRA, ZeRO-2 on 2 ranks": (
        "bundle",
        Setup(frames=8, batch=2, llm="lora", zero=2, gpus=2, dtype="fp32"),
    ),
    "bundle size, LoRA, ZeRO-3 on 2 ranks": (
        "bundle",
        Setup(frames=8, batch=2, llm="lora", zero=3, gpus=2, dtype="fp32"),
    ),
    "demo size, projector only, 8 frames x 2": ("demo", Setup(frames=8, batch=2, llm="frozen", dtype="fp32")),
    "demo size, LoRA, 16 frames x 2, checkpointing": (
        "demo",
        Setup(frames=16, batch=2, llm="lora", grad_ckpt=True, dtype="fp32"),
    ),
}


def text_tokens(model: Path, data: Path, frames: int) -> int:
    """The text tokens beside the video in the bench data's training sequence (chat template and its system prompt,
    question, answer), as the model's processor makes it."""
    processor, config = VideoLLMProcessor.from_pretrained(model), VideoLLMConfig.from_pretrained(model)
    sample = load_samples(data / "train.json")[0]
    frames_array = np.zeros((frames, 224, 224, 3), dtype=np.uint8)
    ids = processor([sample.messages], [[frames_array]], add_generation_prompt=False)["input_ids"]
    return ids.shape[1] - config.num_visual_tokens(frames)


def run_config(setup: Setup, model: Path, data: Path, work: Path, name: str, steps: int, cuda: bool) -> dict:
    """The training config of ``setup``, run for ``steps`` steps; its measured peak."""
    variant = {"trainable": {"projector": setup.projector, "llm": "lora" if setup.llm == "qlora" else setup.llm}}
    if setup.llm == "qlora":
        variant["quantization"] = "nf4"
    if setup.zero:
        variant.update(ranks=setup.gpus, deepspeed=f"zero{setup.zero}")
    args = argparse.Namespace(model=str(model), frames=setup.frames, batch=setup.batch, steps=steps)
    extra = {"bf16": setup.dtype == "bf16", "activation_checkpointing": setup.grad_ckpt}
    return run(name, variant, args, data, work, extra_training=extra, cuda=cuda)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--demo",
        default="outputs/demo",
        help="the demo-size checkpoint (vllm-i2v build "
        "configs/model/demo-random-clip-smollm2.yaml outputs/demo), built when missing",
    )
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: train on this machine's GPUs and measure torch.cuda.max_memory_allocated (the largest rank's); "
        "rows needing more GPUs than it has are left out",
    )
    parser.add_argument("--readme", help="rewrite the plan-bench block of this file")
    args = parser.parse_args()
    models = {"bundle": DEFAULT_MODEL, "demo": Path(args.demo)}
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here")
    if not (models["demo"] / "config.json").is_file():
        from vllm_i2v.models.builder import build_checkpoint

        build_checkpoint(ROOT / "configs/model/demo-random-clip-smollm2.yaml", models["demo"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data")
        for name, (model, setup) in MATRIX.items():
            if args.only and name not in args.only:
                continue
            if cuda and setup.gpus > torch.cuda.device_count():
                print(f"{name}: left out, needs {setup.gpus} GPUs", flush=True)
                continue
            text = text_tokens(models[model], data, setup.frames)
            predicted = plan(models[model], dataclasses.replace(setup, text_tokens=text), search=False)
            measured = run_config(setup, models[model], data, Path(tmp), name, args.steps, cuda)
            rows.append(
                {
                    "name": name,
                    "predicted": predicted.training["total"],
                    "measured": measured.get("gpu_peak_gib" if cuda else "peak_gib"),
                    "error": measured.get("error"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    lines = ["| configuration | predicted | measured | predicted / measured |", "|---|---:|---:|---:|"]
    for row in rows:
        if row["error"] or not row["measured"]:
            lines.append(f"| {row['name']} | {gib(row['predicted'])} | failed: {row['error']} | |")
            continue
        measured = row["measured"] * 2**30
        lines.append(
            f"| {row['name']} | {gib(row['predicted'])} | {gib(measured)} | {row['predicted'] / measured:.2f} |"
        )
    table = "\n".join(lines)
    publish(table, args.readme, "plan-bench-cuda" if cuda else "plan-bench")


if __name__ == "__main__":
    main()
