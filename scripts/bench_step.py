"""Time of one training step (forward and backward of one batch under the config's mixed precision) of a training
config's model and data, per variant, interleaved in one process: the LLM's attention (sdpa or eager) by how the
frozen LLM's linear weights are stored (float32, autocast copying them at every use, or 16-bit as `vllm-i2v train`
stores them). Each variant's loss on the same batch shows what it changes in the numbers.

    python scripts/bench_step.py configs/shapes/video.yaml --rounds 6 --readme README.md   # after build_demo_model.sh
    python scripts/bench_step.py configs/train/instruct_lora.yaml training.bf16=true      # any config, overridden

Interleaving (every variant once per round, the median of the rounds) keeps a machine whose speed drifts over
minutes from favouring one variant. Prints a Markdown table; `--readme` writes it into the step-bench block.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from readme_table import publish

from vllm_i2v.models.attention import set_attention
from vllm_i2v.train.config import load_train_config
from vllm_i2v.train.precision import PRECISIONS, precision_of, store_frozen_llm_weights
from vllm_i2v.train.run import make_trainer

VARIANTS = [(attention, stored) for attention in ("sdpa", "eager") for stored in ("float32", "16-bit")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a training config (its training: section must ask for bf16 or fp16)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as `vllm-i2v train` takes them")
    parser.add_argument("--rounds", type=int, default=6, help="timed steps per variant (after one warm-up each)")
    parser.add_argument("--readme", help="rewrite the step-bench block of this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_train_config(args.config, [*args.overrides, f"training.output_dir={tmp}"])
        precision = precision_of(config.training)
        if precision == "fp32":
            parser.error(f"{args.config}: training.bf16 or training.fp16 must be true (mixed precision)")
        trainer = make_trainer(config)
    model, device = trainer.model, trainer.args.device
    model.to(device).train()
    rows = [trainer.train_dataset[i] for i in range(trainer.args.per_device_train_batch_size)]
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in trainer.data_collator(rows).items()}
    dtypes = {"float32": torch.float32, "16-bit": PRECISIONS[precision]}

    def step(variant) -> tuple[float, float]:
        set_attention(model.language_model, variant[0])
        store_frozen_llm_weights(model.language_model, dtypes[variant[1]])
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=PRECISIONS[precision]):
            loss = model(**batch).loss
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start, loss.item()

    losses = {variant: step(variant)[1] for variant in VARIANTS}  # warm-up
    times = {variant: [] for variant in VARIANTS}
    for round_ in range(args.rounds):
        for variant in VARIANTS:
            times[variant].append(step(variant)[0])
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(f"{t[-1]:.2f} s" for t in times.values()), flush=True)
    base = statistics.median(times[VARIANTS[0]])
    lines = [
        "| attention | frozen LLM linear weights | time per step | speed-up | loss |",
        "|---|---|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        lines.append(f"| {variant[0]} | {variant[1]} | {median:.2f} s | {base / median:.2f}× | {losses[variant]:.6f} |")
    table = "\n".join(lines)
    publish(table, args.readme, "step-bench")


if __name__ == "__main__":
    main()
