"""The ``vllm-i2v`` command: wiring only. Each subcommand lives in :mod:`vllm_i2v.commands`."""

from __future__ import annotations

import argparse
import gc
import sys

from .commands import build, chat, checkpoints, convert, data, encode, evaluate, export, plan, serve, train
from .errors import VllmI2VError

COMMANDS = (build, convert, export, plan, encode, chat, serve, train, checkpoints, evaluate, data)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vllm-i2v",
        description="Turn an image-language foundation model into a video chat model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  vllm-i2v chat --video vllm_i2v/assets/sample.mp4 --question 'How many objects are there?'",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from . import logs

    logs.configure(show_all=getattr(args, "verbose", False), imports_deepspeed=getattr(args, "imports_deepspeed", True))
    try:
        return args.run(args) or 0
    except VllmI2VError as exc:
        _clear_progress_bars()
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _clear_progress_bars() -> None:
    """Erase progress bars left open by the failed step, so the error is a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.leave = False
        bar.close()


def console() -> None:
    """The ``vllm-i2v`` program: :func:`main`, then exit without the garbage collector's last passes over every
    object torch and transformers created (1.5 s of a 10 s cold chat answer); exit handlers still run."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
