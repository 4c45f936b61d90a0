"""The web demo (``vllm-i2v serve``): a Starlette app over the chat CLI's ``ChatSession``."""

from __future__ import annotations

import sys

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def serve(args) -> int:
    """Load the model (as ``vllm-i2v chat`` does) and serve the page until interrupted."""
    import uvicorn

    from ..chat.cli import load_chat_model
    from ..cli import SAMPLE_VIDEO
    from .server import DemoServer

    if args.host not in LOCAL_HOSTS:
        print(f"warning: serving on {args.host}: anyone who can reach this port can use the demo (it has no "
              "authentication)", file=sys.stderr)  # fmt: skip
    model, processor = load_chat_model(args)
    server = DemoServer(model, processor, samples={SAMPLE_VIDEO.name: SAMPLE_VIDEO},
                        upload_limit=int(args.upload_limit_mb * 2**20), num_frames=args.frames,
                        max_new_tokens=args.max_new_tokens)  # fmt: skip
    print(f"vllm-i2v demo on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    try:
        uvicorn.run(server.app(), host=args.host, port=args.port, log_level="warning")
    finally:
        server.close()
    return 0
