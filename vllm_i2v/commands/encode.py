"""``vllm-i2v encode``: one video through the whole model path, with every shape and stage time."""

from __future__ import annotations

from ..bundled import SAMPLE_VIDEO
from .common import add_command, add_sampling_args


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "encode",
        run,
        "run a video through the whole model path and print shapes and stage times",
        "Decode a video, preprocess its frames, run the vision tower and projector, merge the visual tokens into "
        "the prompt and run the LLM over it; print every shape and the time of each stage.",
        "vllm-i2v encode vllm_i2v/assets/sample.mp4 --model outputs/demo --frames 16 --sampler uniform",
    )
    parser.add_argument(
        "video",
        nargs="?",
        default=str(SAMPLE_VIDEO),
        help="video, GIF, image or frame folder (default: the bundled sample clip)",
    )
    parser.add_argument("--model", required=True, help="VideoLLM checkpoint (full, trainable-only or bundle)")
    parser.add_argument("--question", default="What happens in this video?", help="text around the <video> placeholder")
    add_sampling_args(parser)


def run(args) -> None:
    from ..models.stages import encode_stages

    rows, times = encode_stages(
        args.model, args.video, args.question, args.frames, args.sampler, args.fps, args.start, args.end, args.backend
    )
    for label, value in rows.items():
        print(f"{label:<15}{value}")
    print("stage times:")
    for name, seconds in times.items():
        print(f"  {name:<22}{seconds * 1000:9.1f} ms")
