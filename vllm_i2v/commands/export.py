"""``vllm-i2v export --to llava-next-video``: a checkpoint in the layout vLLM and SGLang serve."""

from __future__ import annotations

import time

from .common import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "export",
        run,
        "write a checkpoint in transformers' LLaVA-NeXT-Video layout (for vLLM / SGLang)",
        "Write a checkpoint whose parts fit transformers' LlavaNextVideoForConditionalGeneration (a CLIP or SigLIP "
        "tower, the mlp projector with or without 2x2 pooling, a Llama / Mistral / Qwen2 LLM; LoRA merged first) in "
        "transformers' layout: config, safetensors, tokenizer with its chat template, processor settings. vLLM and "
        "SGLang load that layout. Anything else is refused with the reason.",
        "vllm-i2v export --to llava-next-video outputs/run1/final outputs/run1-lnv\n"
        "  vllm serve outputs/run1-lnv --limit-mm-per-prompt '{\"video\": 1}'   # then, on a GPU machine",
    )
    parser.add_argument("--to", required=True, choices=["llava-next-video"], help="the layout to write")
    parser.add_argument("src", help="a vllm_i2v checkpoint (full, trainable-only or bundle)")
    parser.add_argument("dst", help="folder to write (must not exist)")


def run(args) -> None:
    from ..models.export import export_llava_next_video

    started = time.perf_counter()
    out = export_llava_next_video(args.src, args.dst)
    print(f"saved {out} ({args.to}) in {time.perf_counter() - started:.1f}s")
