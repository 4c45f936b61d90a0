"""``vllm-i2v convert``: import a LLaVA, LLaVA-NeXT-Video or Video-LLaVA checkpoint in transformers' layout."""

from __future__ import annotations

import time

from .common import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "convert",
        run,
        "import a LLaVA, LLaVA-NeXT-Video or Video-LLaVA checkpoint (transformers format)",
        "Read a checkpoint in transformers' own layout (LlavaForConditionalGeneration / LlavaNext..., "
        "LlavaNextVideoForConditionalGeneration, VideoLlavaForConditionalGeneration; hub or transformers-5 keys) "
        "and write a vllm_i2v checkpoint with the same math: vision tower, projector, LLM, tokenizer, chat template. "
        "An image LLM becomes a training-free video model under a pooling projector (projector.type=adapool or "
        "slowfast: no new weights).",
        "vllm-i2v convert --from llava-next-video LLaVA-NeXT-Video-7B-hf/ outputs/lnv7b\n"
        "  vllm-i2v convert --from llava llava-1.5-7b-hf/ outputs/llava-pooled projector.type=adapool "
        "'projector.grid=[16,12,12]' num_frames=16",
    )
    parser.add_argument(
        "--from", dest="source_family", required=True, choices=["llava", "llava-next-video", "video-llava"]
    )
    parser.add_argument("src", help="source checkpoint folder")
    parser.add_argument("dst", help="vllm_i2v checkpoint folder to write")
    parser.add_argument(
        "overrides", nargs="*", help="projector.KEY=VALUE (a pooling projector over the source's MLP) and num_frames=N"
    )


def run(args) -> None:
    from ..errors import ConfigError
    from ..models.convert import convert_checkpoint
    from ..models.spec import apply_overrides

    settings = apply_overrides({}, args.overrides)
    unknown = set(settings) - {"projector", "num_frames"}
    if unknown:
        raise ConfigError(f"unknown convert overrides {sorted(unknown)}; known: projector.*, num_frames")
    started = time.perf_counter()
    out = convert_checkpoint(
        args.source_family, args.src, args.dst, settings.get("projector"), settings.get("num_frames")
    )
    print(f"saved {out} (from {args.source_family} {args.src}) in {time.perf_counter() - started:.1f}s")
