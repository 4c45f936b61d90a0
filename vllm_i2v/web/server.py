"""``vllm-i2v serve``: video chat in the browser, one page over the chat CLI's own :class:`ChatSession`.

A plain Starlette app, not gradio: a few MB of dependencies instead of hundreds, a server up in a fraction of a
second, and the page's element ids and the answer stream are ours (gradio's markup changes between majors,
which breaks browser tests). One model in memory serves every tab; each tab (an id the page keeps in
``sessionStorage``) has its own conversation. The model answers one question at a time, all its work on one
thread (:mod:`~vllm_i2v.web.model_thread`): a question from another tab waits for it; a second question, a new
video or a new frame count from the same tab while its answer streams is refused (409).

Endpoints (``TAB`` = the tab's id): ``GET /`` the page; ``GET /api/info``; ``POST /api/TAB/upload`` (the file
as the body, at most ``upload_limit`` bytes, checked by content); ``POST /api/TAB/sample`` ``{"name"}``;
``GET /api/TAB/video`` (the clip as the browser plays it); ``POST /api/TAB/ask`` ``{"question"}`` → the answer as
NDJSON lines ``{"text"}``... then ``{"done", "seconds"}`` or ``{"error"}``; ``POST /api/TAB/reset``;
``POST /api/TAB/frames`` ``{"frames"}``; ``GET /api/TAB/transcript`` (JSON download).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..chat import ChatSession
from ..errors import VllmI2VError
from .api import OpenAIAPI
from .model_thread import ModelThread

PAGE = Path(__file__).with_name("page.html")
TAB_ID = re.compile(r"[A-Za-z0-9-]{8,64}")
BROWSER_CODECS = {"h264", "vp8", "vp9", "av1"}  # what Chromium plays (MPEG-4 Part 2 it does not)
MAX_TABS = 32
BUSY = "an answer is still streaming in this tab; wait for it"


@dataclass
class Tab:
    """One browser tab: its conversation, its clip, and whether an answer is streaming."""

    session: ChatSession
    folder: Path
    display: Path | None = None
    upload: Path | None = None  # the tab's uploaded clip, while the session reads it
    busy: threading.Lock = field(default_factory=threading.Lock)


class DemoServer:
    """The app's state: the model, the tabs' conversations, and the folder uploads live in (removed on close)."""

    def __init__(
        self,
        model,
        processor,
        samples: dict[str, Path],
        upload_limit: int = 200 * 2**20,
        num_frames: int | None = None,
        max_new_tokens: int = 256,
        storage_limit: int | None = None,
        api: dict | None = None,
        model_thread: ModelThread | None = None,
        independent_turns: bool | None = None,
    ):
        self.model, self.processor = model, processor
        self.model_thread = model_thread or ModelThread()  # every tower and LLM call, one at a time
        self.samples = samples
        self.upload_limit = upload_limit
        self.storage_limit = storage_limit or 4 * upload_limit  # all tabs' files together
        self.num_frames = num_frames or model.config.num_frames
        self.max_new_tokens = max_new_tokens
        self.independent_turns = independent_turns  # the tabs' sessions' (None: as the model was trained)
        self.tabs: OrderedDict[str, Tab] = OrderedDict()
        self.root = Path(tempfile.mkdtemp(prefix="vllm_i2v_serve_"))
        self.api = OpenAIAPI(self, **api) if api is not None else None  # the /v1 routes: OpenAIAPI's settings

    def close(self) -> None:
        self.model_thread.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def tab(self, tab_id: str) -> Tab:
        if not TAB_ID.fullmatch(tab_id):
            raise VllmI2VError(f"bad tab id {tab_id!r}")
        if tab_id not in self.tabs:
            while len(self.tabs) >= MAX_TABS:  # forget the least recently used conversation
                self._evict_oldest()
            session = ChatSession(
                self.model,
                self.processor,
                num_frames=self.num_frames,
                max_new_tokens=self.max_new_tokens,
                independent_turns=self.independent_turns,
            )
            self.tabs[tab_id] = Tab(session, self.root / tab_id)
            self.tabs[tab_id].folder.mkdir()
        self.tabs.move_to_end(tab_id)
        return self.tabs[tab_id]

    def _evict_oldest(self, keep: str | None = None) -> bool:
        """Forget the least recently used tab other than ``keep`` (its conversation and files); False if none."""
        for tab_id in self.tabs:
            if tab_id != keep and not self.tabs[tab_id].busy.locked():
                shutil.rmtree(self.tabs.pop(tab_id).folder, ignore_errors=True)
                return True
        return False

    def stored_bytes(self, exclude: Path | None = None) -> int:
        """Bytes of every tab's files (uploads, player copies) on disk now, but ``exclude``."""
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file() and f != exclude)

    def room_for(self, tab_id: str, incoming: int, exclude: Path) -> int:
        """Bytes that may still be stored beside everything but ``exclude``, after evicting other tabs (oldest
        first) as long as ``incoming`` bytes do not fit."""
        while self.stored_bytes(exclude) + incoming > self.storage_limit and self._evict_oldest(keep=tab_id):
            pass
        return self.storage_limit - self.stored_bytes(exclude)

    def set_video(self, tab: Tab, path: Path, name: str) -> dict:
        """Decode and encode ``path`` (shown as ``name``) for ``tab`` (on the model thread, ``tab.busy`` held by
        the caller); a bad file raises the CLI's one-line error."""
        tab.session.set_video(path, label=name)
        try:
            tab.display = display_copy(path, tab.folder)
        except Exception:  # noqa: BLE001 - the model read it; only the page's player goes without
            tab.display = None
        return {"video": name, "frames": tab.session.frame_count}

    async def while_idle(self, tab: Tab, fn, *args):
        """``fn(*args)`` on the model thread while ``tab`` is not answering (else the page is told to wait)."""
        if not tab.busy.acquire(blocking=False):
            raise TabBusy(BUSY)
        try:
            return await self.model_thread.run(fn, *args)
        finally:
            tab.busy.release()

    # --- routes -----------------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/", lambda request: HTMLResponse(PAGE.read_text())),
            Route("/api/info", self.info),
            Route("/api/{tab}/upload", self.upload, methods=["POST"]),
            Route("/api/{tab}/sample", self.sample, methods=["POST"]),
            Route("/api/{tab}/video", self.video),
            Route("/api/{tab}/ask", self.ask, methods=["POST"]),
            Route("/api/{tab}/reset", self.reset, methods=["POST"]),
            Route("/api/{tab}/frames", self.frames, methods=["POST"]),
            Route("/api/{tab}/transcript", self.transcript),
            *(self.api.routes() if self.api else ()),
        ]

        @asynccontextmanager
        async def lifespan(app):
            yield
            self.close()  # uploads are removed when the server stops

        return Starlette(routes=routes, exception_handlers={VllmI2VError: _error}, lifespan=lifespan)

    async def info(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {"samples": list(self.samples), "frames": self.num_frames, "upload_limit_mb": self.upload_limit / 2**20}
        )

    async def upload(self, request: Request) -> JSONResponse:
        tab_id = request.path_params["tab"]
        tab = self.tab(tab_id)
        name = Path(request.headers.get("x-filename", "") or "upload").name
        target = tab.folder / f"upload-{uuid.uuid4().hex[:8]}-{re.sub(r'[^A-Za-z0-9._-]', '_', name)[-100:]}"
        declared = request.headers.get("content-length", "")
        room = self.room_for(tab_id, int(declared) if declared.isdigit() else 0, target)
        size, kept, complete = 0, True, False
        try:
            with open(target, "wb") as out:
                async for chunk in request.stream():  # past a limit: read on (a client cut off mid-send sees no reply)
                    size += len(chunk)
                    if kept and size > room:
                        room = self.room_for(tab_id, size, target)
                    kept = kept and size <= min(room, self.upload_limit)
                    if kept:
                        out.write(chunk)
            complete = True
        finally:
            if not (complete and kept):  # a cut-off or refused upload leaves nothing behind
                target.unlink(missing_ok=True)
        if size > self.upload_limit:
            return JSONResponse({"error": f"upload is larger than {megabytes(self.upload_limit)}"}, 413)
        if not kept:
            return JSONResponse(
                {"error": f"the server's upload space ({megabytes(self.storage_limit)}) is full; try again later"}, 507
            )
        try:
            result = await self.while_idle(tab, self.set_video, tab, target, name)
        except VllmI2VError as exc:  # name the file as the user knows it, not its place on the server
            target.unlink(missing_ok=True)
            if isinstance(exc, TabBusy):
                raise
            raise VllmI2VError(str(exc).replace(str(target), name)) from None
        if tab.upload is not None and tab.upload != target:  # the tab's earlier clip is no longer in use
            tab.upload.unlink(missing_ok=True)
        tab.upload = target
        return JSONResponse(result)

    async def sample(self, request: Request) -> JSONResponse:
        tab = self.tab(request.path_params["tab"])
        name = await json_field(request, "name", str)
        if name not in self.samples:
            raise VllmI2VError(f"no sample clip named {name!r}; samples: {', '.join(self.samples)}")
        return JSONResponse(await self.while_idle(tab, self.set_video, tab, self.samples[name], name))

    async def video(self, request: Request) -> Response:
        tab = self.tab(request.path_params["tab"])
        if tab.display is None:
            return JSONResponse({"error": "no video yet"}, 404)
        return FileResponse(tab.display, media_type="video/mp4")

    async def ask(self, request: Request) -> Response:
        tab = self.tab(request.path_params["tab"])
        question = (await json_field(request, "question", str)).strip()
        if not question:
            return JSONResponse({"error": "empty question"}, 400)
        if tab.session.video is None:
            return JSONResponse({"error": "no video is loaded in this tab: upload one or pick the sample first"}, 400)
        if not tab.busy.acquire(blocking=False):
            return JSONResponse({"error": BUSY}, 409)
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        send = lambda item: loop.call_soon_threadsafe(queue.put_nowait, item)  # noqa: E731

        def answer():
            try:
                _, times = tab.session.ask(question, on_text=lambda piece: send({"text": piece}))
                last = {"done": True, "seconds": round(times.generate, 2), "stopped": tab.session.cancel.is_set()}
            except VllmI2VError as exc:
                last = {"error": f"error: {exc}"}
            except Exception as exc:  # noqa: BLE001 - reported to the page; the server goes on
                last = {"error": f"error: {type(exc).__name__}: {exc}"}
            tab.busy.release()  # before the last line: a client that reads it may ask again at once
            send(last)

        self.model_thread.submit(answer)

        async def lines():
            finished = False
            try:
                while not finished:
                    item = await queue.get()
                    finished = "done" in item or "error" in item
                    yield json.dumps(item) + "\n"
            finally:
                if not finished:  # the page went away mid-answer: stop generating
                    tab.session.cancel.set()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def reset(self, request: Request) -> JSONResponse:
        tab = self.tab(request.path_params["tab"])
        if not tab.busy.acquire(blocking=False):
            return JSONResponse({"error": BUSY}, 409)
        try:
            tab.session.reset()
        finally:
            tab.busy.release()
        return JSONResponse({"ok": True})

    async def frames(self, request: Request) -> JSONResponse:
        tab = self.tab(request.path_params["tab"])
        frames = await json_field(request, "frames", int)
        if not 1 <= frames <= 256:
            raise VllmI2VError(f"frames must be a whole number from 1 to 256, got {frames!r}")
        await self.while_idle(tab, tab.session.set_frames, frames)
        return JSONResponse({"frames": tab.session.num_frames})

    async def transcript(self, request: Request) -> Response:  # names the video as the user knows it
        tab = self.tab(request.path_params["tab"])
        body = json.dumps(tab.session.transcript(), indent=1, ensure_ascii=False) + "\n"
        headers = {"Content-Disposition": 'attachment; filename="transcript.json"'}
        return Response(body, media_type="application/json", headers=headers)


class BadRequest(VllmI2VError):
    """A request body the API cannot use (answered 400 with a JSON message)."""


class TabBusy(VllmI2VError):
    """The tab is answering; what it was asked to do must wait (answered 409)."""


async def json_field(request: Request, key: str, kind: type):
    """Field ``key`` of the request's JSON object body, of type ``kind``; anything else is a :class:`BadRequest`."""
    try:
        body = json.loads((await request.body()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):  # JSON true is no frame count
        raise BadRequest(f"{key!r} must be {'a string' if kind is str else 'a whole number'}, got {json.dumps(value)}")
    return value


def megabytes(size: int) -> str:
    """``size`` bytes as the user set it: ``200 MB``, ``0.5 MB``."""
    return f"{size / 2**20:.3g} MB"


async def _error(request: Request, exc: Exception) -> JSONResponse:
    """Bad input: the same one line the CLI prints (a busy tab: 409, as when it is asked again)."""
    if isinstance(exc, TabBusy):
        return JSONResponse({"error": str(exc)}, 409)
    return JSONResponse({"error": f"error: {exc}"}, 400)


def display_copy(path: Path, folder: Path) -> Path:
    """The clip as a browser can play it: ``path`` itself when it is H.264/VP8/VP9/AV1 in mp4 or webm, else an
    H.264 mp4 transcoded into ``folder``."""
    import av

    from ..video.writer import write_video

    with av.open(str(path)) as container:
        stream = container.streams.video[0] if container.streams.video else None
        playable = (
            stream is not None
            and stream.codec_context.name in BROWSER_CODECS
            and container.format.name in ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
        )
        if playable:
            return path
        fps = float(stream.average_rate or 8) if stream is not None else 8.0
        target = folder / "display.mp4"
        frames = (frame.to_ndarray(format="rgb24") for frame in container.decode(video=0))
        write_video(target, frames, fps=fps)
    return target
