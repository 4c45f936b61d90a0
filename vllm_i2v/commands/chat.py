"""``vllm-i2v chat``: talk about a video, interactively or with --question for scripts."""

from __future__ import annotations

from .common import add_chat_model_args, add_command, independent_turns


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "chat",
        run,
        "chat about a video (interactive, or --question for scripts)",
        "Multi-turn chat over a video with streamed answers. The video is decoded and encoded once; later turns "
        "reuse the conversation's KV cache (a model trained on independent turns answers each question about the "
        "video alone, as it was trained; --turns conversation keeps the earlier turns in its prompt). Interactive "
        "commands: /video PATH, /reset, /frames N, /save FILE, /help, /quit. With --question (repeatable) it answers "
        "in order and exits; stdout then holds only the answers (or, with --json, one JSON document).",
        "vllm-i2v chat --video vllm_i2v/assets/sample.mp4 --question 'What moves?' --question 'Which way?'",
    )
    parser.add_argument("--video", default=None, help="video, GIF, image or frame folder to talk about")
    add_chat_model_args(parser)
    parser.add_argument("--question", action="append", default=None, help="ask this and print the answer (repeatable)")
    parser.add_argument("--json", action="store_true", help="with --question: print the turns as one JSON document")
    parser.set_defaults(imports_deepspeed=False)  # loading and answering never import it: a faster cold start


def run(args) -> int:
    from ..chat import ChatSession
    from ..chat.cli import load_chat_model, run_chat

    model, processor = load_chat_model(args.model, args.vision, args.llm, args.projector)
    session = ChatSession(
        model,
        processor,
        num_frames=args.frames or model.config.num_frames,
        max_new_tokens=args.max_new_tokens,
        independent_turns=independent_turns(args),
    )
    if args.video:
        session.set_video(args.video)
    return run_chat(session, args.question, args.json, args.verbose)
