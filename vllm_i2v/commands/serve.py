"""``vllm-i2v serve``: the web demo (and, beside it, the HTTP API) over the chat CLI's model and session."""

from __future__ import annotations

from .common import add_chat_model_args, add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "serve", run, "video chat in the browser (upload or pick a clip, multi-turn, streamed)",
        "Serve a one-page web demo over the chat CLI's model and session: upload a video (checked by content; "
        "at most --upload-limit-mb) or pick the bundled sample, watch it, ask questions with streamed answers, "
        "reset, change the number of frames, download the transcript. One model serves every tab; each tab has "
        "its own conversation. Binds 127.0.0.1 unless --host says otherwise (the page has no authentication).",
        "vllm-i2v serve --port 7860          # then open http://127.0.0.1:7860/",
    )
    add_chat_model_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--upload-limit-mb", type=float, default=200.0, help="largest upload accepted")
    parser.add_argument(
        "--storage-limit-mb", type=float, default=None, help="all tabs' uploads together (default: 4 x the upload "
        "limit); the least recently used tabs are forgotten to make room"
    )  # fmt: skip


def run(args) -> int:
    from ..chat.cli import load_chat_model
    from ..web import serve, warn_if_public

    warn_if_public(args.host)  # before the model loads, so it shows even when loading fails
    model, processor = load_chat_model(args.model, args.vision, args.llm, args.projector)
    storage = int(args.storage_limit_mb * 2**20) if args.storage_limit_mb else None
    return serve(model, processor, args.host, args.port, int(args.upload_limit_mb * 2**20), storage, args.frames,
                 args.max_new_tokens)  # fmt: skip
