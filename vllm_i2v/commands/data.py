"""``vllm-i2v data check | convert | shapes``: datasets in the field's layouts, and the synthetic shapes world."""

from __future__ import annotations

import argparse

from ..data.formats import FORMATS
from .common import add_command


def register(subparsers) -> None:
    data = subparsers.add_parser(
        "data",
        help="check, convert or write video-text datasets",
        description="Check or convert video-text datasets in the LLaVA, Video-ChatGPT (vcg) and VideoChat2 JSON/JSONL "
        "layouts; write splits of the synthetic shapes world.",
        epilog="examples:\n  vllm-i2v data shapes data/shapes --split test --count 200\n"
        "  vllm-i2v data check data/shapes/test.json --video-root data/shapes/videos\n"
        "  vllm-i2v data convert data/shapes/test.json test_vcg.json --to vcg --split-turns",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = data.add_subparsers(dest="data_command", required=True)
    formats = ["auto", *FORMATS]
    check = add_command(
        commands,
        "check",
        run_check,
        "list every row that training would skip, with its line or index",
        "Report every row training would skip (malformed, missing, escaping or undecodable video, wrong placeholder "
        "count, empty or misordered turns, too long for the model's context) and how many of each kind; each video "
        "is decoded as training decodes it unless --no-decode. Exits 1 if any row has a problem.",
        "vllm-i2v data check data/shapes/test.json --video-root data/shapes/videos "
        "--model vllm_i2v/bundled/shapes-smollm2",
    )
    check.add_argument("file", help="dataset JSON or JSONL")
    check.add_argument("--video-root", default=None, help="folder every video path is relative to (and must stay in)")
    check.add_argument(
        "--image-root", default=None, help="folder every image path is relative to (default: the video root)"
    )
    check.add_argument("--format", default="auto", choices=formats)
    check.add_argument(
        "--model", default=None, help="checkpoint whose context length and visual tokens to check against"
    )
    check.add_argument("--frames", type=int, default=8, help="frames per video for the length and decoding checks")
    check.add_argument(
        "--no-decode", action="store_true", help="skip decoding each video (a fast pass: paths and text only)"
    )
    convert = add_command(
        commands,
        "convert",
        run_convert,
        "convert a dataset between layouts (losslessly, or an error naming the row)",
        "Convert between the llava, vcg and videochat2 layouts, every field kept (ids and fields a layout does not "
        "know included); a row the target layout cannot hold (several turns for vcg, a system prompt for vcg) is an "
        "error. An existing output is refused unless --overwrite; the source never.",
        "vllm-i2v data convert VideoInstruct_100K.json train_llava.jsonl --to llava",
    )
    convert.add_argument("src")
    convert.add_argument("dst", help="output file (.jsonl for JSON lines, else a JSON list)")
    convert.add_argument("--to", required=True, choices=list(FORMATS))
    convert.add_argument("--format", default="auto", choices=formats, help="input layout")
    convert.add_argument("--split-turns", action="store_true", help="vcg: write one row per turn of a multi-turn row")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output file (never the source)")
    shapes = add_command(
        commands,
        "shapes",
        run_shapes,
        "write a split of the synthetic shapes world (clips or stills, with QA)",
        "Write shapes-world clips (mp4) or stills (png) with captions and QA (attribute, counting, motion, temporal "
        "order, caption), deterministic from the seed. Splits: train, test, heldout-combos (colour-shape pairs no "
        "training clip shows), long (clips longer than any training clip), together (training clips of 2-3 objects all "
        "in view from the first frame).",
        "vllm-i2v data shapes data/shapes --split train --count 2000 --seed 0",
    )
    shapes.add_argument("out", help="output folder")
    shapes.add_argument("--split", default="train", choices=["train", "test", "heldout-combos", "long", "together"])
    shapes.add_argument("--count", type=int, default=100, help="scenes to write")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument(
        "--images",
        action="store_true",
        help="stills with captions (the image world) instead of clips",
    )
    shapes.add_argument(
        "--every-pair",
        action="store_true",
        help="stills of every colour-shape pair, the held-out ones too (default: the training pairs only)",
    )
    shapes.add_argument(
        "--region-naming",
        nargs="+",
        default=["both"],
        choices=["both", "color", "shape"],
        help="stills: what each object's region phrases name, one region per naming (a red square, a red object, "
        "a square; stage 0's region_weight reads them)",
    )
    shapes.add_argument("--canvas", type=int, default=224, help="frame side in pixels")
    shapes.add_argument("--single-turn", action="store_true", help="one conversation per question, not one per clip")
    shapes.add_argument(
        "--every-object",
        action="store_true",
        help="attribute and motion questions about every object, not one drawn "
        "at random (training data; train with data.independent_turns)",
    )


def run_check(args) -> int:
    from ..data.commands import check_file

    processor = None
    if args.model:
        from ..models import VideoLLMProcessor

        processor = VideoLLMProcessor.from_pretrained(args.model)
    report = check_file(
        args.file,
        args.video_root,
        args.format,
        processor,
        args.frames,
        decode=not args.no_decode,
        image_root=args.image_root,
    )
    for line in report.problems:
        print(line)
    print(report.summary(args.file))
    return 1 if report.problems else 0


def run_convert(args) -> None:
    from ..data.commands import convert_file

    read, written = convert_file(args.src, args.dst, args.to, args.format, args.split_turns, args.overwrite)
    print(f"{args.src} ({read} rows) -> {args.dst} ({written} rows, {args.to})")


def run_shapes(args) -> None:
    from ..data.shapes import write_split
    from ..errors import ConfigError

    if args.every_pair and not args.images:
        raise ConfigError(
            "--every-pair is for stills (--images): clips of the held-out pairs are --split heldout-combos"
        )
    counts = write_split(
        args.out,
        args.split,
        args.count,
        args.seed,
        video=not args.images,
        canvas=args.canvas,
        single_turn=args.single_turn,
        every_object=args.every_object,
        every_pair=args.every_pair,
        region_namings=args.region_naming,
    )
    print(f"{args.out}: {args.count} {'stills' if args.images else args.split + ' clips'}; questions {counts}")
