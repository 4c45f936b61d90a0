"""``vllm-i2v build``: assemble a VideoLLM checkpoint from a build spec."""

from __future__ import annotations

import time

from .common import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "build",
        run,
        "assemble a VideoLLM checkpoint from a vision tower and a chat LLM",
        "Assemble a VideoLLM checkpoint (safetensors) from an image-pretrained vision tower, a temporal projector "
        "(new weights) and a chat LLM, as named in a build spec. The checkpoint holds every weight (the demo spec "
        "writes about 850 MB).",
        "vllm-i2v build configs/model/clip-l336-qwen2.5-0.5b-stpool.yaml outputs/my-model projector.type=adapool",
    )
    parser.add_argument("spec", help="build spec YAML (see configs/model/)")
    parser.add_argument("out", help="output checkpoint directory")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, dotted keys for nesting (projector.type=mlp)"
    )


def run(args) -> None:
    from ..models.builder import build_checkpoint

    started = time.perf_counter()
    out, parameters = build_checkpoint(args.spec, args.out, args.overrides)
    print(f"saved {out} ({parameters / 1e6:.1f}M parameters) in {time.perf_counter() - started:.1f}s")
