"""The OpenAI-compatible HTTP API beside the page: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Messages come in OpenAI's chat schema; a video is a content part in vLLM's form ``{"type": "video_url",
"video_url": {"url": ...}}``, an image ``{"type": "image_url", ...}``. URLs are ``data:`` (base64) or, under
``--allowed-local-media-path``, ``file://``; nothing is fetched from the network. Every request carries the whole
conversation, so the work of earlier turns is found again instead of redone: each video is decoded and encoded once
(:class:`VisualCache`, keyed by its content hash and frame count), and the answer continues the KV cache of the
recent conversation sharing the longest prefix (:class:`~vllm_i2v.chat.generation.PrefixCachePool`) through the
same generation loop as the chat CLI. Errors are OpenAI's JSON (``{"error": {"message", "type", "param",
"code"}}``); a request never leaves a file behind and never shows a server path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..chat.generation import PrefixCachePool, continue_conversation, prompt_key
from ..errors import BudgetError, PromptError, VideoInputError, VllmI2VError
from ..video import UniformSampler, read_video

ROLES = ("system", "user", "assistant")
MAX_WAITING = 32  # requests queued for the model beyond this are answered 429


class APIError(Exception):
    """A request the API answers with OpenAI's error JSON."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(self.status)
        kind = kind or ("server_error" if self.status >= 500 else "invalid_request_error")
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, self.status)


class VisualCache:
    """Visual tokens (and the frames they were read from) of recent videos and images, by content hash and frames
    asked for; the least recently used are dropped."""

    def __init__(self, max_entries: int = 64):
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[torch.Tensor, int]] = OrderedDict()

    def get(self, key: str) -> tuple[torch.Tensor, int] | None:
        if key in self.entries:
            self.entries.move_to_end(key)
        return self.entries.get(key)

    def put(self, key: str, tokens: torch.Tensor, frames: int) -> None:
        self.entries[key] = (tokens, frames)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


class MediaPart:
    """One video or image of a request: where it is (bytes or an allowed local file) and how the user named it."""

    def __init__(self, kind: str, where: str, data: bytes | None = None, path: Path | None = None):
        self.kind, self.where, self.data, self.path = kind, where, data, path

    def digest(self) -> str:
        if self.data is None:
            with open(self.path, "rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()
        return hashlib.sha256(self.data).hexdigest()


class OpenAIAPI:
    """The ``/v1`` routes over a :class:`~vllm_i2v.web.server.DemoServer`'s model (its model thread, limits and
    folder)."""

    def __init__(
        self,
        demo,
        served_name: str,
        api_key: str | None = None,
        allowed_media: str | None = None,
        kv_cache_bytes: int = 2**30,
        kv_cache_entries: int = 16,
    ):
        self.demo = demo
        self.served_name = served_name
        self.api_key = api_key
        self.allowed_media = Path(allowed_media).resolve() if allowed_media else None
        self.pool = PrefixCachePool(kv_cache_entries, kv_cache_bytes)
        self.visuals = VisualCache()
        self.waiting = 0
        self.created = int(time.time())

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", self._guarded(self.models)),
            Route("/v1/chat/completions", self._guarded(self.chat_completions), methods=["POST"]),
        ]

    def _guarded(self, handler):
        async def endpoint(request: Request) -> Response:
            try:
                self._authorize(request)
                return await handler(request)
            except APIError as exc:
                return exc.response()
            except Exception:  # noqa: BLE001 - never a traceback to the client
                return APIError(500, "internal error while answering; the server log has the details").response()

        return endpoint

    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise APIError(401, "missing or wrong API key (send Authorization: Bearer KEY)", code="invalid_api_key")

    async def models(self, request: Request) -> Response:
        entry = {"id": self.served_name, "object": "model", "created": self.created, "owned_by": "vllm_i2v"}
        return JSONResponse({"object": "list", "data": [entry]})

    # --- a completion -------------------------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        body = await self._body(request)
        params = self._params(body)
        messages, media = self._messages(body.get("messages"))
        if self.waiting >= MAX_WAITING:
            raise APIError(429, f"{self.waiting} requests are waiting for the model; try again shortly")
        request_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not params["stream"]:
            reply, usage = await self._run(messages, media, params)
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": _finish(reply.finish_reason),
            }
            return JSONResponse(
                {
                    "id": request_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": self.served_name,
                    "choices": [choice],
                    "usage": usage,
                    "frames": params["frames"],
                }
            )
        return self._stream(request_id, created, messages, media, params)

    async def _body(self, request: Request) -> dict:
        limit = self.demo.upload_limit * 4 // 3 + 2**20  # base64 grows a file by a third
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body is larger than the upload limit allows ({limit} bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body is larger than the upload limit allows ({limit} bytes)")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise APIError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        return body

    def _params(self, body: dict) -> dict:
        model = body.get("model")
        if model != self.served_name:
            raise APIError(
                404,
                f"the model {model!r} does not exist; this server serves {self.served_name!r}",
                param="model",
                code="model_not_found",
            )
        if body.get("n", 1) != 1:
            raise APIError(400, "n must be 1 (one answer per request)", param="n")
        new_tokens = body.get("max_completion_tokens", body.get("max_tokens", self.demo.max_new_tokens))
        _check(
            isinstance(new_tokens, int) and not isinstance(new_tokens, bool) and new_tokens >= 1,
            "max_tokens must be a positive whole number",
            "max_tokens",
        )
        frames = body.get("frames", self.demo.num_frames)
        _check(
            isinstance(frames, int) and not isinstance(frames, bool) and 1 <= frames <= 256,
            "frames must be a whole number from 1 to 256",
            "frames",
        )
        temperature, top_p, seed = body.get("temperature"), body.get("top_p"), body.get("seed")
        _check(
            temperature is None or (_number(temperature) and 0 <= temperature <= 2),
            "temperature is 0 to 2",
            "temperature",
        )
        _check(top_p is None or (_number(top_p) and 0 < top_p <= 1), "top_p is above 0, at most 1", "top_p")
        _check(seed is None or (isinstance(seed, int) and not isinstance(seed, bool)), "seed is a whole number", "seed")
        stop = body.get("stop")
        stop = [stop] if isinstance(stop, str) else stop
        _check(
            stop is None or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop)),
            "stop is a string or up to 4 strings",
            "stop",
        )
        stream = body.get("stream", False)
        _check(isinstance(stream, bool), "stream is true or false", "stream")
        options = body.get("stream_options") or {}
        _check(isinstance(options, dict), "stream_options is an object", "stream_options")
        minimum = body.get("min_tokens", 0)  # vLLM's extension: at least this many new tokens
        _check(
            isinstance(minimum, int) and not isinstance(minimum, bool) and 0 <= minimum <= new_tokens,
            "min_tokens is a whole number from 0 to max_tokens",
            "min_tokens",
        )
        generation = {"min_new_tokens": minimum} if minimum else {}
        if temperature:  # absent or 0: greedy
            generation |= {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p or 1.0)}
        return {
            "max_new_tokens": new_tokens,
            "frames": frames,
            "generation": generation,
            "seed": seed,
            "stop": stop,
            "stream": stream,
            "include_usage": bool(options.get("include_usage")),
        }

    def _messages(self, raw) -> tuple[list[dict], list[MediaPart]]:
        """Our chat messages (content as parts with video/image placeholders) and the media in placeholder order."""
        _check(isinstance(raw, list) and raw, "messages must be a non-empty list", "messages")
        messages, media = [], []
        for i, message in enumerate(raw):
            where = f"messages[{i}]"
            _check(
                isinstance(message, dict) and message.get("role") in ROLES,
                f"{where} needs a role: {', '.join(ROLES)}",
                where,
            )
            content = message.get("content")
            if isinstance(content, str):
                messages.append({"role": message["role"], "content": [{"type": "text", "text": content}]})
                continue
            _check(isinstance(content, list), f"{where}.content must be a string or a list of parts", where)
            parts = []
            for j, part in enumerate(content):
                at = f"{where}.content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": part["text"]})
                elif kind in ("video_url", "image_url") and isinstance(part.get(kind), dict):
                    _check(message["role"] == "user", f"{at}: only user messages may carry videos or images", at)
                    media.append(self._media(kind.removesuffix("_url"), part[kind].get("url"), at))
                    parts.append({"type": kind.removesuffix("_url")})
                else:
                    raise APIError(400, f"{at}: a part is {{type: text | video_url | image_url, ...}}", param=at)
            messages.append({"role": message["role"], "content": parts})
        return messages, media

    def _media(self, kind: str, url, where: str) -> MediaPart:
        _check(isinstance(url, str) and url, f"{where}: the {kind} needs a url", where)
        scheme = urlparse(url).scheme.lower()
        if scheme == "data":
            header, _, payload = url.partition(",")
            _check(header.endswith(";base64"), f"{where}: a data URL must be base64 (data:video/mp4;base64,...)", where)
            if len(payload) * 3 // 4 > self.demo.upload_limit:
                raise APIError(413, f"{where}: the {kind} is larger than the upload limit", param=where)
            try:
                return MediaPart(kind, where, data=base64.b64decode(payload, validate=True))
            except (binascii.Error, ValueError):
                raise APIError(400, f"{where}: the data URL is not valid base64", param=where) from None
        if scheme == "file":
            if self.allowed_media is None:
                raise APIError(400, f"{where}: file:// URLs need the server's --allowed-local-media-path", param=where)
            path = Path(unquote(urlparse(url).path))
            try:
                resolved = path.resolve(strict=True)  # links followed: where the file really is
            except (OSError, RuntimeError):
                raise APIError(400, f"{where}: no such file: {url}", param=where) from None
            if not resolved.is_relative_to(self.allowed_media) or not resolved.is_file():
                raise APIError(400, f"{where}: {url} is not a file inside the allowed media folder", param=where)
            if resolved.stat().st_size > self.demo.upload_limit:
                raise APIError(413, f"{where}: the {kind} is larger than the upload limit", param=where)
            return MediaPart(kind, where, path=resolved)
        if scheme in ("http", "https"):
            raise APIError(
                400,
                f"{where}: remote URLs are not fetched (no network at run time): send the {kind} as a "
                "data: URL, or as a file:// URL under --allowed-local-media-path",
                param=where,
            )
        raise APIError(400, f"{where}: unsupported URL scheme {scheme!r} (data: or file://)", param=where)

    # --- the model ----------------------------------------------------------------------------------------------

    async def _run(self, messages, media, params, on_text=None, cancel=None):
        self.waiting += 1
        try:
            return await self.demo.model_thread.run(self._answer, messages, media, params, on_text, cancel)
        finally:
            self.waiting -= 1

    def _answer(self, messages, media, params, on_text=None, cancel=None):
        """(reply, usage) of one request, on the model thread: visual tokens (cached), prompt, reused KV cache."""
        demo, processor = self.demo, self.demo.processor
        visual, keys, counts = [], [], []
        for part in media:
            key = f"{part.digest()}:{1 if part.kind == 'image' else params['frames']}"
            tokens, frames = self.visuals.get(key) or self._encode(part, key, params)
            visual.append(tokens)
            keys.append(key)
            counts.append(frames)
        try:
            ids, _ = processor.expanded_ids(messages, counts, True)
        except (BudgetError, PromptError) as exc:
            raise APIError(400, str(exc), param="messages") from None
        key = prompt_key(ids, demo.model.visual_placeholder_ids, keys, [len(t) for t in visual])
        cached_key, cache = self.pool.take(key)
        if params["seed"] is not None:
            torch.manual_seed(params["seed"])
        reply, cached_key = continue_conversation(
            demo.model,
            processor,
            ids,
            visual,
            cache,
            cached_key,
            key,
            params["max_new_tokens"],
            params["generation"],
            on_text,
            cancel,
            params["stop"],
        )
        self.pool.put(cached_key, cache)  # only after a whole answer: a failed one drops its cache
        usage = {
            "prompt_tokens": len(ids),
            "completion_tokens": len(reply.new_ids),
            "total_tokens": len(ids) + len(reply.new_ids),
        }
        return reply, usage

    def _encode(self, part: MediaPart, key: str, params) -> tuple[torch.Tensor, int]:
        """The part decoded (from a temporary file, removed at once) and encoded; cached under ``key``. Returns its
        visual tokens and the number of frames read."""
        asked = 1 if part.kind == "image" else params["frames"]
        temp = None
        try:
            if part.path is None:
                temp = self.demo.root / f"api-{uuid.uuid4().hex}"
                temp.write_bytes(part.data)
            source = part.path or temp
            budget = self.demo.processor.max_frames(reserved_tokens=params["max_new_tokens"] + 256)
            clip = read_video(source, UniformSampler(asked), max_frames=budget)
        except VideoInputError as exc:
            raise APIError(422, f"{part.where}: {exc.cause}", param=part.where) from None
        except VllmI2VError as exc:
            raise APIError(400, f"{part.where}: {exc}", param=part.where) from None
        finally:
            if temp is not None:
                temp.unlink(missing_ok=True)
        frames = clip.frames[:1] if part.kind == "image" else clip.frames
        pixels = self.demo.processor.frame_preprocessor(frames)
        with torch.no_grad():
            (tokens,) = self.demo.model.encode_visual(pixels, [len(frames)])
        self.visuals.put(key, tokens, len(frames))
        return tokens, len(frames)

    def _stream(self, request_id, created, messages, media, params) -> StreamingResponse:
        """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``."""
        loop, queue, cancel = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()
        send = lambda item: loop.call_soon_threadsafe(queue.put_nowait, item)  # noqa: E731
        base = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": self.served_name}

        def chunk(delta: dict, finish=None, **extra) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return f"data: {json.dumps({**base, 'choices': [choice], **extra})}\n\n"

        async def events():
            task = asyncio.create_task(self._run(messages, media, params, lambda t: send(("text", t)), cancel))
            task.add_done_callback(lambda _: send(("done", None)))
            finished = False
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    kind, value = await queue.get()
                    if kind == "text":
                        yield chunk({"content": value})
                        continue
                    break
                try:
                    reply, usage = task.result()
                except Exception as exc:  # noqa: BLE001 - reported in the stream, as OpenAI's servers do
                    error = exc if isinstance(exc, APIError) else APIError(500, "internal error while answering")
                    yield f"data: {json.dumps({'error': json.loads(error.response().body)['error']})}\n\n"
                    yield "data: [DONE]\n\n"
                    finished = True
                    return
                yield chunk({}, _finish(reply.finish_reason), frames=params["frames"])
                if params["include_usage"]:
                    yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"
                finished = True
            finally:
                if not finished:  # the client went away mid-answer: stop generating
                    cancel.set()

        return StreamingResponse(events(), media_type="text/event-stream")


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise APIError(400, message, param=param)
