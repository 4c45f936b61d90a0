"""The OpenAI-compatible API of `vllm-i2v serve`, called by the real `openai` client against a real uvicorn server on
a free loopback port, with the bundled model: the same answers as the chat CLI (streamed or not, several turns),
data and file URLs, the local-path guard, the API key, OpenAI's error JSON, concurrent clients, nothing left behind."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from ports import free_port
from test_bad_input import BAD_VIDEOS, bad_video
from tiny import random_frames

from vllm_i2v.bundled import DEFAULT_MODEL, SAMPLE_VIDEO
from vllm_i2v.data.shapes import scene_for
from vllm_i2v.video.writer import write_video

KEY = "test-key-123"
QUESTIONS = ["How many objects are there?", "Which direction does the red square move?", "Describe the video."]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The allowed media folder: the sample clip, a one-object shapes clip, and a file outside it."""
    root = tmp_path_factory.mktemp("media")
    allowed = root / "allowed"
    allowed.mkdir()
    (allowed / "sample.mp4").write_bytes(SAMPLE_VIDEO.read_bytes())
    scene = next(s for s in (scene_for(7, i, "test") for i in range(100)) if len(s.objects) == 1)
    write_video(allowed / "one.mp4", scene.frames(), fps=scene.fps)
    write_video(root / "secret.mp4", random_frames(8, 32, 32), fps=4)
    (allowed / "link-out.mp4").symlink_to(root / "secret.mp4")
    return allowed


@pytest.fixture(scope="module")
def server(media):
    import uvicorn

    from vllm_i2v.models import VideoLLMProcessor, load_model
    from vllm_i2v.web.server import DemoServer

    api = {"served_name": "shapes-smollm2", "api_key": KEY, "allowed_media": str(media), "kv_cache_entries": 4}
    demo = DemoServer(
        load_model(DEFAULT_MODEL),
        VideoLLMProcessor.from_pretrained(DEFAULT_MODEL),
        samples={},
        upload_limit=2**20,
        max_new_tokens=48,
        api=api,
    )
    port = free_port()
    runner = uvicorn.Server(uvicorn.Config(demo.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not runner.started:
        assert time.time() < deadline
        time.sleep(0.05)
    yield demo, f"http://127.0.0.1:{port}"
    runner.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server[1]}/v1", api_key=KEY, max_retries=0, timeout=120)


def data_url(path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def video_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


@pytest.fixture(scope="module")
def cli_answers(server):
    """What the chat CLI's session answers to QUESTIONS about the sample clip, greedily, turn after turn, with the
    earlier turns in the prompt (``--turns conversation``: the API answers the history its client sends)."""
    from vllm_i2v.chat import ChatSession

    demo, _ = server
    session = ChatSession(
        demo.model, demo.processor, num_frames=demo.num_frames, max_new_tokens=48, independent_turns=False
    )
    session.set_video(SAMPLE_VIDEO)
    return [session.ask(q)[0] for q in QUESTIONS]


@pytest.mark.parametrize("stream", [False, True])
def test_answers_equal_the_chat_clis_over_several_turns(client, media, cli_answers, stream):
    messages, answers = [], []
    for n, question in enumerate(QUESTIONS):
        content = (
            [video_part(data_url(media / "sample.mp4")), {"type": "text", "text": question}] if n == 0 else question
        )
        messages.append({"role": "user", "content": content})
        if stream:
            pieces, usage = [], None
            for chunk in client.chat.completions.create(
                model="shapes-smollm2",
                messages=messages,
                temperature=0,
                max_tokens=48,
                stream=True,
                stream_options={"include_usage": True},
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                usage = chunk.usage or usage
            answer = "".join(pieces).strip()
            assert usage.prompt_tokens > 38 and usage.completion_tokens >= 1
        else:
            reply = client.chat.completions.create(
                model="shapes-smollm2", messages=messages, temperature=0, max_tokens=48
            )
            answer = reply.choices[0].message.content
            assert reply.usage.prompt_tokens > 38  # the visual tokens are counted
            assert reply.choices[0].finish_reason == "stop" and reply.model_extra["frames"] > 1
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
    assert answers == cli_answers


def test_file_urls_inside_the_allowed_folder_only(client, media):
    reply = client.chat.completions.create(
        model="shapes-smollm2",
        temperature=0,
        max_tokens=8,
        messages=[
            {
                "role": "user",
                "content": [
                    video_part((media / "one.mp4").as_uri()),
                    {"type": "text", "text": "How many objects are there?"},
                ],
            }
        ],
    )
    assert reply.choices[0].message.content == "1"
    for url in [
        (media.parent / "secret.mp4").as_uri(),  # outside
        f"file://{media}/../secret.mp4",  # .. out
        (media / "link-out.mp4").as_uri(),  # a link that leads out
        "https://example.com/clip.mp4",  # no network at run time
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="shapes-smollm2", messages=[{"role": "user", "content": [video_part(url)]}]
            )
        message = refused.value.body["message"]
        assert "not a file inside the allowed media folder" in message or "remote URLs are not fetched" in message


def test_the_api_key_is_required(server):
    request = urllib.request.Request(f"{server[1]}/v1/models")  # no key at all
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401 and json.loads(refused.value.read())["error"]["code"] == "invalid_api_key"
    wrong = openai.OpenAI(base_url=f"{server[1]}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.models.list()
    assert refused.value.body["code"] == "invalid_api_key"
    listed = openai.OpenAI(base_url=f"{server[1]}/v1", api_key=KEY, max_retries=0).models.list()
    assert [m.id for m in listed.data] == ["shapes-smollm2"]


def raw(base: str, body: bytes, key: str = KEY) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_bad_requests_get_openais_error_json_and_leave_nothing(server, media):
    demo, base = server
    video = lambda url: json.dumps(
        {"model": "shapes-smollm2", "messages": [{"role": "user", "content": [video_part(url)]}]}
    )  # noqa: E731
    cases = {
        "malformed JSON": (b'{"model":', 400),
        "unknown model": (
            json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}).encode(),
            404,
        ),
        "no messages": (json.dumps({"model": "shapes-smollm2", "messages": []}).encode(), 400),
        "a part without a url": (
            json.dumps(
                {
                    "model": "shapes-smollm2",
                    "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {}}]}],
                }
            ).encode(),
            400,
        ),
        "bad base64": (video("data:video/mp4;base64,@@@notbase64").encode(), 400),
        "not a video": (
            video("data:video/mp4;base64," + base64.b64encode(b"plain text, no video" * 50).decode()).encode(),
            422,
        ),
        "over the size limit": (video("data:video/mp4;base64," + "A" * (2 * 2**20)).encode(), 413),
        "n of 2": (
            json.dumps({"model": "shapes-smollm2", "n": 2, "messages": [{"role": "user", "content": "hi"}]}).encode(),
            400,
        ),
    }
    for name, (body, status) in cases.items():
        got, answer = raw(base, body)
        assert got == status, (name, got, answer)
        error = answer["error"]
        assert set(error) == {"message", "type", "param", "code"} and "Traceback" not in error["message"], name
        assert str(demo.root) not in error["message"] and str(media) not in error["message"], name
    assert not list(demo.root.glob("api-*"))  # every decoded upload is gone


def test_concurrent_clients_on_different_videos_get_their_own_answers(server, client, media):
    results, callers = {}, set()
    hooks = [  # ... all answered on the server's one model thread (web/model_thread.py)
        part.register_forward_pre_hook(lambda *_: callers.add(threading.current_thread().name))
        for part in (server[0].model.projector, server[0].model.language_model)
    ]

    def ask(name: str, clip: str):
        reply = client.chat.completions.create(
            model="shapes-smollm2",
            temperature=0,
            max_tokens=8,
            messages=[
                {
                    "role": "user",
                    "content": [
                        video_part(data_url(media / clip)),
                        {"type": "text", "text": "How many objects are there?"},
                    ],
                }
            ],
        )
        results[name] = reply.choices[0].message.content

    threads = [
        threading.Thread(target=ask, args=(f"{clip}-{i}", clip)) for i in range(3) for clip in ("sample.mp4", "one.mp4")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for hook in hooks:
        hook.remove()
    assert results == {
        f"{clip}-{i}": truth for i in range(3) for clip, truth in (("sample.mp4", "3"), ("one.mp4", "1"))
    }
    assert len(callers) == 1 and next(iter(callers)).startswith("vllm-i2v-model")


def test_stop_strings_and_length(client, media):
    messages = [
        {
            "role": "user",
            "content": [video_part(data_url(media / "sample.mp4")), {"type": "text", "text": "Describe the video."}],
        }
    ]
    short = client.chat.completions.create(model="shapes-smollm2", messages=messages, temperature=0, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    full = client.chat.completions.create(model="shapes-smollm2", messages=messages, temperature=0, max_tokens=48)
    word = full.choices[0].message.content.split()[2]
    cut = client.chat.completions.create(
        model="shapes-smollm2", messages=messages, temperature=0, max_tokens=48, stop=[word]
    )
    assert word not in cut.choices[0].message.content and full.choices[0].message.content.startswith(
        cut.choices[0].message.content
    )


def test_evaluating_through_the_api_equals_evaluating_in_process(server, tmp_path, monkeypatch):
    from vllm_i2v.cli import main
    from vllm_i2v.data.shapes import write_split

    demo, base = server
    write_split(tmp_path / "data", "test", 12, seed=0)
    monkeypatch.setenv("SERVER_KEY", KEY)
    common = ["eval", "shapes", "--data", str(tmp_path / "data"), "--limit", "15", "--frames", str(demo.num_frames)]
    assert main([*common, "--model", str(DEFAULT_MODEL), "--out", str(tmp_path / "local"), "--batch-size", "1"]) == 0
    remote = ["--endpoint", f"{base}/v1", "--served-model", "shapes-smollm2", "--api-key-env", "SERVER_KEY"]
    assert main([*common, *remote, "--out", str(tmp_path / "remote")]) == 0
    by_id = lambda run: {
        r["question_id"]: r["pred"]
        for r in map(json.loads, (tmp_path / run / "predictions.jsonl").read_text().splitlines())
    }  # noqa: E731
    assert by_id("remote") == by_id("local") and len(by_id("local")) == 15
    scores = lambda run: json.loads((tmp_path / run / "metrics.json").read_text())["judge_free"]  # noqa: E731
    assert scores("remote") == scores("local")
    assert main([*common, *remote[:2], "--served-model", "other", "--out", str(tmp_path / "x")]) == 2  # checked first


@pytest.mark.parametrize("kind", [k for k in BAD_VIDEOS if k not in ("missing", "directory")])
def test_the_bad_input_table_through_the_api(server, tmp_path, kind):
    demo, base = server
    path, _ = bad_video(tmp_path, kind)
    url = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()
    body = json.dumps({"model": "shapes-smollm2", "messages": [{"role": "user", "content": [video_part(url)]}]})
    status, answer = raw(base, body.encode())
    assert status == 422 and answer["error"]["param"] == "messages[0].content[0]", answer
    message = answer["error"]["message"]
    assert message.startswith("messages[0].content[0]: ") and "\n" not in message and str(demo.root) not in message
    assert not list(demo.root.glob("api-*"))
