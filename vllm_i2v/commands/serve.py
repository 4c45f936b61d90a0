"""``vllm-i2v serve``: the web demo and an OpenAI-compatible API over the chat CLI's model and generation loop."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from .common import add_chat_model_args, add_command, independent_turns


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "serve",
        run,
        "video chat in the browser and over an OpenAI-compatible API",
        "Serve a one-page web demo and the OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models; videos "
        "as video_url content parts with data: URLs, or file:// URLs under --allowed-local-media-path) over the chat "
        "CLI's model. Uploads are checked by content and limited by --upload-limit-mb. One model serves every tab "
        "and request; each video is encoded once and the KV cache of a conversation's earlier turns is reused. Binds "
        "127.0.0.1 unless --host says otherwise; beyond it the API needs --api-key.",
        "vllm-i2v serve --port 7860          # then open http://127.0.0.1:7860/ or point an OpenAI client at /v1",
    )
    add_chat_model_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--upload-limit-mb", type=float, default=200.0, help="largest upload or media part accepted")
    parser.add_argument(
        "--storage-limit-mb",
        type=float,
        default=None,
        help="all tabs' uploads together (default: 4 x the upload limit); the least recently used tabs are "
        "forgotten to make room",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="the key /v1 requests must send (default: $VLLM_I2V_API_KEY; required beyond 127.0.0.1)",
    )
    parser.add_argument(
        "--allowed-local-media-path",
        default=None,
        help="folder whose files /v1 requests may name as file:// URLs "
        "(links are resolved first; nothing outside it is read)",
    )
    parser.add_argument(
        "--served-model-name",
        default=None,
        help="the model name /v1 answers to (default: the checkpoint folder's name)",
    )
    parser.add_argument(
        "--kv-cache-mb",
        type=float,
        default=1024.0,
        help="KV caches of recent /v1 conversations kept for reuse, at most this many MB together",
    )
    parser.add_argument("--kv-cache-entries", type=int, default=16, help="... and at most this many conversations")


def run(args) -> int:
    from ..bundled import DEFAULT_MODEL
    from ..chat.cli import load_chat_model
    from ..web import check_exposure, serve

    api_key = args.api_key or os.environ.get("VLLM_I2V_API_KEY") or None
    check_exposure(args.host, api_key)  # before the model loads, so it shows even when loading fails
    api = {
        "served_name": args.served_model_name or Path(args.model or args.llm or DEFAULT_MODEL).name,
        "api_key": api_key,
        "allowed_media": args.allowed_local_media_path,
        "kv_cache_bytes": int(args.kv_cache_mb * 2**20),
        "kv_cache_entries": args.kv_cache_entries,
    }
    storage = int(args.storage_limit_mb * 2**20) if args.storage_limit_mb else None
    return serve(
        partial(load_chat_model, args.model, args.vision, args.llm, args.projector),
        args.host,
        args.port,
        int(args.upload_limit_mb * 2**20),
        storage,
        args.frames,
        args.max_new_tokens,
        api,
        independent_turns(args),
    )
