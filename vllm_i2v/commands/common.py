"""What the subcommands share: a parser with a description and an example, and the arguments several take."""

from __future__ import annotations

import argparse


def add_command(subparsers, name: str, run, summary: str, description: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` says what it does and shows an example; every one takes ``--verbose``."""
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run)
    parser.add_argument(
        "--verbose", action="store_true", help="also show other libraries' logs and progress bars (and timings)"
    )
    return parser


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=None, help="frames to sample (default: the model's num_frames)")
    parser.add_argument(
        "--sampler", default="uniform", choices=["uniform", "fps", "segments"], help="sampling strategy"
    )
    parser.add_argument("--fps", type=float, default=None, help="frames per second for --sampler fps")
    parser.add_argument("--start", type=float, default=None, help="clip start, seconds")
    parser.add_argument("--end", type=float, default=None, help="clip end, seconds")
    parser.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"], help="video decoder")


def add_chat_model_args(parser: argparse.ArgumentParser) -> None:
    """Which model answers (``chat`` and ``serve``), and how much it reads and writes."""
    parser.add_argument(
        "--model",
        default=None,
        help="VideoLLM checkpoint (full, trainable-only or bundle); default: the bundled shapes-world model",
    )
    parser.add_argument(
        "--vision",
        default=None,
        help="from parts: a vision tower checkpoint (with --llm); the projector between "
        "them is new and untrained, so answers mean nothing until it is trained",
    )
    parser.add_argument("--llm", default=None, help="from parts: a chat LLM (dir, hub id, .gguf or package://...)")
    parser.add_argument(
        "--projector", default="adapool", help="from parts: the projector type (new, untrained weights)"
    )
    parser.add_argument("--frames", type=int, default=None, help="frames to sample (default: the model's num_frames)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length cap")
    parser.add_argument(
        "--turns",
        choices=("independent", "conversation"),
        default=None,
        help="independent: answer each question about the video alone; conversation: with the earlier turns in the "
        "prompt (default: independent for a model trained on independent turns, as the bundled one, else "
        "conversation). The chat and the web page follow it; the API answers the messages its client sends",
    )


def independent_turns(args: argparse.Namespace) -> bool | None:
    """``--turns`` as :class:`~vllm_i2v.chat.ChatSession` takes it (None: as the model was trained)."""
    return None if args.turns is None else args.turns == "independent"
