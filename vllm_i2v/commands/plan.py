"""``vllm-i2v plan``: tokens and memory of a model x frames x batch x ZeRO x LoRA/QLoRA before any run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .common import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "plan",
        run,
        "visual tokens, sequence length and memory for a model and a training or inference set-up, before any run",
        "From configs alone (the model built on the meta device: no weight read, nothing downloaded) print the visual "
        "tokens per frame and per video, the sequence, parameters per part, per-device training memory (weights, "
        "gradients, optimizer states with ZeRO and offload, activations measured on the meta model) and inference "
        "memory (weights, KV cache), whether each fits the device, the largest frames and batch that fit, and the "
        "cheapest change that makes a plan fit. MODEL is a checkpoint folder, a build spec or a training config (its "
        "frames, batch, DeepSpeed config and LoRA/QLoRA settings are read from it; flags override them).",
        "vllm-i2v plan configs/train/instruct_lora.yaml --gpus 8 --device-memory 24GiB\n"
        "  vllm-i2v plan configs/model/clip-l336-qwen2.5-0.5b-stpool.yaml --frames 16 --batch 4 --qlora --json",
    )
    parser.add_argument("model", help="checkpoint folder, build spec (configs/model/*.yaml) or training config")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of a training config (model=DIR ...)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video")
    parser.add_argument("--batch", type=int, default=None, help="videos per device per step")
    parser.add_argument("--gpus", type=int, default=None, help="devices training together")
    parser.add_argument("--zero", type=int, default=None, choices=[0, 2, 3], help="DeepSpeed ZeRO stage (0: none)")
    parser.add_argument(
        "--offload", action="store_true", default=None, help="optimizer (and ZeRO-3 weights) in CPU memory"
    )
    adapters = parser.add_mutually_exclusive_group()
    adapters.add_argument("--lora", type=int, default=None, metavar="R", help="LoRA of rank R on the LLM")
    adapters.add_argument("--qlora", action="store_true", help="QLoRA: the LLM in 4-bit NF4, LoRA on top")
    adapters.add_argument("--full", action="store_true", help="the whole LLM trains")
    parser.add_argument("--grad-ckpt", action="store_true", default=None, help="gradient checkpointing")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="training precision")
    parser.add_argument("--text-tokens", type=int, default=None, help="text tokens beside the video (default 128)")
    parser.add_argument(
        "--device-memory", default=None, help="e.g. 24GiB (default: the GPU's, else this machine's RAM)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON document")


def setup_of(args):
    """The set-up the arguments describe: a training config's own, with the flags given over it."""
    from ..models.spec import load_yaml
    from ..plan import Setup, setup_from_training_config

    source, setup = args.model, Setup()
    path = Path(args.model)
    if path.suffix in (".yaml", ".yml") and "training" in load_yaml(path, (), "config"):
        source, setup = setup_from_training_config(path, args.overrides)
    flags = {
        "frames": args.frames,
        "batch": args.batch,
        "gpus": args.gpus,
        "zero": args.zero,
        "offload": args.offload,
        "grad_ckpt": args.grad_ckpt,
        "dtype": args.dtype,
        "text_tokens": args.text_tokens,
    }
    setup = dataclasses.replace(setup, **{k: v for k, v in flags.items() if v is not None})
    if args.lora:
        setup = dataclasses.replace(setup, llm="lora", lora_r=args.lora)
    elif args.qlora:
        setup = dataclasses.replace(setup, llm="qlora")
    elif args.full:
        setup = dataclasses.replace(setup, llm="full")
    return source, setup


def run(args) -> int:
    from ..plan import parse_size, plan, render

    source, setup = setup_of(args)
    result = plan(source, setup, parse_size(args.device_memory) if args.device_memory else None)
    print(json.dumps(result.to_json(), indent=1) if args.json else render(result))
    return 0
