"""`vllm-i2v serve`: the real app on a real local HTTP server (uvicorn) with the bundled model; its API over HTTP,
and the page in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ports import free_port
from test_bad_input import BAD_VIDEOS, bad_video

from vllm_i2v.bundled import DEFAULT_MODEL, SAMPLE_VIDEO

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# The bundled sample clip (scripts/make_sample_clip.py): a red square moving right, a blue circle, a yellow triangle.
TRUTH = {"How many objects are there?": "3", "Which direction does the red square move?": "right"}


@pytest.fixture(scope="module")
def server():
    """The demo app with the bundled model, served by uvicorn on a free local port."""
    import uvicorn

    from vllm_i2v.models import VideoLLMProcessor
    from vllm_i2v.models.checkpoint import load_model
    from vllm_i2v.web.server import DemoServer

    demo = DemoServer(
        load_model(DEFAULT_MODEL),
        VideoLLMProcessor.from_pretrained(DEFAULT_MODEL),
        samples={SAMPLE_VIDEO.name: SAMPLE_VIDEO},
        upload_limit=2 * 2**20,
        max_new_tokens=40,
    )
    port = free_port()
    runner = uvicorn.Server(uvicorn.Config(demo.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not runner.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield demo, f"http://127.0.0.1:{port}"
    runner.should_exit = True
    thread.join(timeout=10)
    assert not demo.root.exists()  # uploads removed at shutdown


def call(url: str, body=None, headers: dict | None = None):
    """(status, parsed JSON or NDJSON lines) of one request; ``body``: a dict (sent as JSON), bytes or chunks."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": "application/json", **(headers or {})} if isinstance(body, dict) else headers or {}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, text, kind = response.status, response.read().decode(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        status, text, kind = error.code, error.read().decode(), error.headers.get("content-type", "")
    if "ndjson" in kind:
        return status, [json.loads(line) for line in text.splitlines()]
    return status, json.loads(text) if "json" in kind else text


def test_upload_ask_stream_and_transcript(server, tmp_path):
    _, base = server
    clip = tmp_path / "my clip"  # no extension: the type is read from the content
    shutil.copy(SAMPLE_VIDEO, clip)
    status, info = call(f"{base}/api/tab-aaaaaaaa/upload", clip.read_bytes(), {"X-Filename": clip.name})
    assert status == 200 and info["frames"] > 1
    for question, truth in TRUTH.items():
        status, lines = call(f"{base}/api/tab-aaaaaaaa/ask", {"question": question})
        assert status == 200 and lines[-1]["done"] is True
        assert "".join(line.get("text", "") for line in lines).strip() == truth
    status, transcript = call(f"{base}/api/tab-aaaaaaaa/transcript")
    assert [m["content"] for m in transcript["messages"] if m["role"] == "assistant"] == list(TRUTH.values())
    with urllib.request.urlopen(f"{base}/api/tab-aaaaaaaa/video") as response:
        assert response.headers["content-type"] == "video/mp4" and len(response.read()) == clip.stat().st_size


def test_tabs_have_their_own_conversations_and_one_answer_at_a_time(server):
    demo, base = server
    for tab in ("tab-bbbbbbbb", "tab-cccccccc"):
        assert call(f"{base}/api/{tab}/sample", {"name": SAMPLE_VIDEO.name})[0] == 200
    results = {}

    def ask(key, tab, question):
        results[key] = call(f"{base}/api/{tab}/ask", {"question": question})

    first = threading.Thread(target=ask, args=("b1", "tab-bbbbbbbb", "Describe the video."))
    first.start()
    deadline = time.time() + 30
    while not demo.tabs["tab-bbbbbbbb"].busy.locked():  # until the first answer is streaming
        assert time.time() < deadline
        time.sleep(0.005)
    ask("b2", "tab-bbbbbbbb", "How many objects are there?")  # same tab: refused
    busy_frames = call(f"{base}/api/tab-bbbbbbbb/frames", {"frames": 4})  # ... and so is changing its frames
    ask("c", "tab-cccccccc", "How many objects are there?")  # another tab: waits its turn
    first.join()
    assert results["b2"][0] == 409 and "still streaming" in results["b2"][1]["error"]
    assert busy_frames[0] == 409 and "still streaming" in busy_frames[1]["error"]
    assert results["c"][0] == 200 and "".join(x.get("text", "") for x in results["c"][1]).strip() == "3"
    assert results["b1"][0] == 200 and results["b1"][1][-1]["done"] is True
    assert len([line for line in results["b1"][1] if "text" in line]) > 1  # streamed in pieces
    b, c = (call(f"{base}/api/{tab}/transcript")[1]["messages"] for tab in ("tab-bbbbbbbb", "tab-cccccccc"))
    assert [m["role"] for m in b] == ["user", "assistant"] and "Describe" in b[0]["content"]
    assert [m["role"] for m in c] == ["user", "assistant"] and c[1]["content"] == "3"


def test_tabs_ask_the_bundled_model_each_question_alone_unless_told(server):
    demo, _ = server
    assert demo.tab("tab-dddddddd").session.independent_turns is True  # trained so: config.independent_turns
    demo.independent_turns = False  # vllm-i2v serve --turns conversation
    try:
        assert demo.tab("tab-eeeeeeee").session.independent_turns is False
    finally:
        demo.independent_turns = None


def test_all_model_work_runs_on_one_thread(server):
    """Each thread that calls PyTorch gets its own OpenMP team; several outnumber the cores and slow every kernel
    (web/model_thread.py): encoding, answering and changing frames all run on the server's one model thread."""
    demo, base = server
    callers = set()
    hooks = [
        part.register_forward_pre_hook(lambda *_: callers.add(threading.current_thread().name))
        for part in (demo.model.projector, demo.model.language_model)
    ]
    try:
        assert call(f"{base}/api/tab-threaded/sample", {"name": SAMPLE_VIDEO.name})[0] == 200
        assert call(f"{base}/api/tab-threaded/ask", {"question": "How many objects are there?"})[0] == 200
        assert call(f"{base}/api/tab-threaded/frames", {"frames": 4})[0] == 200
    finally:
        for hook in hooks:
            hook.remove()
    assert len(callers) == 1 and next(iter(callers)).startswith("vllm-i2v-model")


def test_clips_a_browser_cannot_play_are_transcoded_for_the_page_and_frames_change(server, tmp_path):
    import av

    from vllm_i2v.video import UniformSampler, read_video
    from vllm_i2v.video.writer import write_video

    _, base = server
    clip = tmp_path / "old.avi"  # MPEG-4 Part 2: Chromium does not play it
    write_video(clip, read_video(SAMPLE_VIDEO, UniformSampler(16)).frames, fps=8)
    status, info = call(f"{base}/api/tab-eeeeeeee/upload", clip.read_bytes(), {"X-Filename": clip.name})
    assert status == 200 and info["video"] == "old.avi"
    with urllib.request.urlopen(f"{base}/api/tab-eeeeeeee/video") as response:
        (tmp_path / "shown.mp4").write_bytes(response.read())
    with av.open(str(tmp_path / "shown.mp4")) as shown:
        assert shown.streams.video[0].codec_context.name == "h264" and shown.streams.video[0].frames == 16
    assert call(f"{base}/api/tab-eeeeeeee/frames", {"frames": 2}) == (200, {"frames": 2})
    assert call(f"{base}/api/tab-eeeeeeee/frames", {"frames": 0})[0] == 400
    status, lines = call(f"{base}/api/tab-eeeeeeee/ask", {"question": "How many objects are there?"})
    assert status == 200 and call(f"{base}/api/tab-eeeeeeee/transcript")[1]["num_frames"] == 2


def test_bad_uploads_are_the_clis_one_line_errors(server, tmp_path):
    demo, base = server
    status, body = call(f"{base}/api/tab-dddddddd/upload", b"\x00not a video" * 100, {"X-Filename": "clip.mp4"})
    assert status == 400 and body["error"].startswith("error: clip.mp4: not a readable video")
    assert "\n" not in body["error"]
    status, body = call(f"{base}/api/tab-dddddddd/upload", b"0" * (3 * 2**20), {"X-Filename": "big.mp4"})
    assert status == 413 and "larger than 2 MB" in body["error"]
    chunks = iter([b"0" * 2**20] * 3)  # no Content-Length (chunked): the server counts as it reads
    status, body = call(f"{base}/api/tab-dddddddd/upload", chunks, {"X-Filename": "big.mp4"})
    assert status == 413 and "larger than 2 MB" in body["error"]
    png_magic = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100  # PyAV raises its PermissionError on it
    status, body = call(f"{base}/api/tab-dddddddd/upload", png_magic, {"X-Filename": "fake.png"})
    assert (
        status == 400
        and body["error"].startswith("error: fake.png: not a readable video")
        and "\n" not in body["error"]
    )
    assert not list((demo.root / "tab-dddddddd").glob("upload-*"))  # nothing bad is kept
    status, body = call(f"{base}/api/tab-dddddddd/ask", {"question": "Hi?"})  # the tab goes on, and says why not
    assert status == 400 and "no video is loaded" in body["error"]
    assert call(f"{base}/api/../etc/ask", {"question": "Hi?"})[0] in (400, 404)


def send_partial_upload(base: str, tab: str, sent: int, declared: int) -> None:
    """A client that starts an upload and disconnects halfway."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        head = (
            f"POST /api/{tab}/upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared}\r\n"
            "X-Filename: a.mp4\r\n\r\n"
        )
        conn.sendall(head.encode() + b"0" * sent)
        time.sleep(0.3)


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            if condition():
                return
        except OSError:  # a server not listening yet
            pass
        assert time.time() < deadline, "condition not reached"
        time.sleep(0.05)


def test_aborted_uploads_leave_nothing_and_storage_is_bounded(server, tmp_path):
    demo, base = server
    for _ in range(5):
        send_partial_upload(base, "tab-ffffffff", sent=300_000, declared=1_500_000)
    wait_for(lambda: not list((demo.root / "tab-ffffffff").glob("upload-*")))
    clip = SAMPLE_VIDEO.read_bytes()
    limit = demo.storage_limit
    try:  # room for about two clips: a third upload evicts the least recently used tab
        demo.storage_limit = int(2.5 * len(clip))
        for tab in ("tab-store001", "tab-store002", "tab-store003"):
            assert call(f"{base}/api/{tab}/upload", clip, {"X-Filename": "c.mp4"})[0] == 200
        assert "tab-store001" not in demo.tabs and demo.stored_bytes() <= demo.storage_limit
        demo.storage_limit = len(clip) // 2  # not even one clip fits beside the tab's own: refused, nothing kept
        status, body = call(f"{base}/api/tab-store003/upload", clip, {"X-Filename": "c.mp4"})
        assert status == 507 and "upload space (0" in body["error"]
        assert len(list((demo.root / "tab-store003").glob("upload-*"))) == 1  # only the clip it already had
    finally:
        demo.storage_limit = limit


@pytest.mark.parametrize("body", [b'{"question":', b"[1]", b'{"question": ["a list"]}', b'{"question": "\xff"}', b""])
def test_malformed_bodies_are_400_with_a_json_message(server, body):
    _, base = server
    assert call(f"{base}/api/tab-gggggggg/sample", {"name": SAMPLE_VIDEO.name})[0] == 200
    status, answer = call(f"{base}/api/tab-gggggggg/ask", body, {"Content-Type": "application/json"})
    assert status == 400 and answer["error"].startswith("error: ") and "Traceback" not in answer["error"]


def test_inputs_are_checked_exactly_and_no_server_path_shows(server, tmp_path):
    demo, base = server
    assert call(f"{base}/api/tab-hhhhhhhh%0A/sample", {"name": SAMPLE_VIDEO.name})[0] == 400  # a full match only
    assert call(f"{base}/api/tab-hhhhhhhh/upload", SAMPLE_VIDEO.read_bytes(), {"X-Filename": "holiday.mp4"})[0] == 200
    assert call(f"{base}/api/tab-hhhhhhhh/frames", {"frames": True})[0] == 400
    assert call(f"{base}/api/tab-hhhhhhhh/ask", {"question": "How many objects are there?"})[0] == 200
    status, transcript = call(f"{base}/api/tab-hhhhhhhh/transcript")
    assert transcript["video"] == "holiday.mp4" and str(demo.root) not in json.dumps(transcript)
    assert call(f"{base}/api/tab-hhhhhhhh/sample", {"name": SAMPLE_VIDEO.name})[0] == 200
    status, transcript = call(f"{base}/api/tab-hhhhhhhh/transcript")
    assert transcript["video"] == SAMPLE_VIDEO.name and str(SAMPLE_VIDEO.parent) not in json.dumps(transcript)


def test_limits_are_shown_as_set():
    from vllm_i2v.web.server import megabytes

    assert (megabytes(2**19), megabytes(200 * 2**20), megabytes(int(1.25 * 2**20))) == ("0.5 MB", "200 MB", "1.25 MB")


def test_sigterm_stops_the_server_promptly_despite_a_stalled_client(tmp_path):
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm_i2v.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "vllm-i2v demo on" in proc.stdout.readline()
        wait_for(lambda: call(f"http://127.0.0.1:{port}/api/info")[0] == 200, 60)
        host = ("127.0.0.1", port)
        stalled = socket.create_connection(host)  # an upload that never finishes
        stalled.sendall(b"POST /api/tab-stalled1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0000")
        wait_for(lambda: list(tmp_path.glob("vllm_i2v_serve_*/tab-stalled1/upload-*")))
        started = time.time()
        proc.terminate()
        proc.wait(timeout=15)
        assert time.time() - started < 8 and not list(tmp_path.glob("vllm_i2v_serve_*"))
        stalled.close()
    finally:
        proc.kill()


def test_serving_beyond_this_machine_needs_an_api_key_and_warns(tmp_path):
    command = [sys.executable, "-m", "vllm_i2v.cli", "serve", "--host", "0.0.0.0", "--model", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "VLLM_I2V_API_KEY"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: serving on 0.0.0.0: the /v1 API needs --api-key (or $VLLM_I2V_API_KEY) beyond 127.0.0.1"
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**env, "VLLM_I2V_API_KEY": "k"})
    assert "no authentication" in done.stderr and "not a VideoLLM checkpoint" in done.stderr and done.returncode == 2


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_in_a_real_browser(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, base = server
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1280,900",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    os.environ.update(env)  # Chromium writes outside its profile too
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    wait = WebDriverWait(driver, 120)
    try:
        driver.get(base + "/")
        clip = tmp_path / "shapes.mp4"
        shutil.copy(SAMPLE_VIDEO, clip)
        driver.find_element(By.ID, "upload").send_keys(str(clip))
        wait.until(lambda d: "frames encoded" in d.find_element(By.ID, "status").text)
        wait.until(
            lambda d: d.execute_script(
                "const v = document.getElementById('player'); return v.readyState >= 2 && v.videoWidth > 0"
            )
        )
        for question, truth in TRUTH.items():
            driver.find_element(By.ID, "question").send_keys(question)
            driver.find_element(By.ID, "ask").click()
            wait.until(
                lambda d: (
                    d.find_elements(By.CSS_SELECTOR, ".msg.model")
                    and d.find_elements(By.CSS_SELECTOR, ".msg.model")[-1].get_attribute("data-done") == "true"
                )
            )
            assert driver.find_elements(By.CSS_SELECTOR, ".msg.model")[-1].text.strip() == truth
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "web-demo.png"))
        corrupt = tmp_path / "corrupt.mp4"
        corrupt.write_bytes(b"\x00\x01 definitely not a video" * 64)
        driver.find_element(By.ID, "upload").send_keys(str(corrupt))
        wait.until(lambda d: "not a readable video" in d.find_element(By.ID, "error").text)
        assert driver.find_element(By.ID, "error").text.startswith("error: ")
        big = tmp_path / "big.mp4"
        big.write_bytes(b"0" * (3 * 2**20))
        driver.find_element(By.ID, "upload").send_keys(str(big))
        wait.until(lambda d: "larger than the 2 MB upload limit" in d.find_element(By.ID, "error").text)
    finally:
        driver.quit()
        for key in env:
            os.environ.pop(key, None)


@pytest.mark.parametrize("kind", [k for k in BAD_VIDEOS if k not in ("missing", "directory")])
def test_the_bad_input_table_through_the_upload(server, tmp_path, kind):
    demo, base = server
    path, phrase = bad_video(tmp_path, kind, "my clip ünï.mp4")
    status, body = call(f"{base}/api/tab-badtable/upload", path.read_bytes(), {"X-Filename": "my clip.mp4"})
    phrases = (phrase,) if isinstance(phrase, str) else phrase
    assert status == 400 and body["error"].startswith("error: my clip.mp4: ") and "\n" not in body["error"]
    assert any(p in body["error"] for p in phrases) and str(demo.root) not in body["error"]
    assert not list((demo.root / "tab-badtable").glob("upload-*"))
