"""The web demo and the OpenAI-compatible API (``vllm-i2v serve``): one Starlette app over the chat CLI's model and
generation loop."""

from __future__ import annotations

import sys

from ..errors import ConfigError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def check_exposure(host: str, api_key: str | None) -> None:
    """Beyond this machine, the API needs a key (and the page, which has none, gets a warning)."""
    if host in LOCAL_HOSTS:
        return
    if not api_key:
        raise ConfigError(f"serving on {host}: the /v1 API needs --api-key (or $VLLM_I2V_API_KEY) beyond 127.0.0.1")
    print(
        f"warning: serving on {host}: anyone who can reach this port can use the demo page (it has no "
        "authentication; the /v1 API asks for the key)",
        file=sys.stderr,
    )


def serve(
    load,
    host: str = "127.0.0.1",
    port: int = 7860,
    upload_limit: int = 200 * 2**20,
    storage_limit: int | None = None,
    frames: int | None = None,
    max_new_tokens: int = 256,
    api: dict | None = None,
    independent_turns: bool | None = None,
) -> int:
    """Serve the page and the ``/v1`` API (``api``: :class:`~vllm_i2v.web.api.OpenAIAPI`'s settings) for the model
    ``load()`` returns as ``(model, processor)`` until interrupted (SIGINT or SIGTERM: open connections get a few
    seconds). The model is loaded on the thread that will run it (see :mod:`vllm_i2v.web.model_thread`).
    ``independent_turns``: how the page's conversations ask the model (:class:`~vllm_i2v.chat.ChatSession`)."""
    import uvicorn

    from ..bundled import SAMPLE_VIDEO
    from .model_thread import ModelThread
    from .server import DemoServer

    model_thread = ModelThread()
    try:
        model, processor = model_thread.call(load)
    except BaseException:
        model_thread.close()
        raise
    server = DemoServer(
        model,
        processor,
        samples={SAMPLE_VIDEO.name: SAMPLE_VIDEO},
        upload_limit=upload_limit,
        num_frames=frames,
        max_new_tokens=max_new_tokens,
        storage_limit=storage_limit,
        api=api,
        model_thread=model_thread,
        independent_turns=independent_turns,
    )
    served = f" · OpenAI-compatible API at http://{host}:{port}/v1 (model {api['served_name']!r})" if api else ""
    print(f"vllm-i2v demo on http://{host}:{port}/{served} (Ctrl-C stops it)", flush=True)
    try:
        uvicorn.run(server.app(), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    finally:
        server.close()
    return 0
