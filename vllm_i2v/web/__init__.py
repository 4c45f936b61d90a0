"""The web demo (``vllm-i2v serve``): a Starlette app over the chat CLI's ``ChatSession``."""

from __future__ import annotations

import sys

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def warn_if_public(host: str) -> None:
    """Say so when the server will be reachable from other machines (the page has no authentication)."""
    if host not in LOCAL_HOSTS:
        print(f"warning: serving on {host}: anyone who can reach this port can use the demo (it has no "
              "authentication)", file=sys.stderr)  # fmt: skip


def serve(model, processor, host: str = "127.0.0.1", port: int = 7860, upload_limit: int = 200 * 2**20,
          storage_limit: int | None = None, frames: int | None = None, max_new_tokens: int = 256) -> int:  # fmt: skip
    """Serve the page for ``model`` until interrupted (SIGINT or SIGTERM: open connections get a few seconds)."""
    import uvicorn

    from ..bundled import SAMPLE_VIDEO
    from .server import DemoServer

    server = DemoServer(model, processor, samples={SAMPLE_VIDEO.name: SAMPLE_VIDEO}, upload_limit=upload_limit,
                        num_frames=frames, max_new_tokens=max_new_tokens, storage_limit=storage_limit)  # fmt: skip
    print(f"vllm-i2v demo on http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    try:
        uvicorn.run(server.app(), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    finally:
        server.close()
    return 0
