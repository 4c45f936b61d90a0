"""Time to first token through the OpenAI-compatible API over a 5-turn conversation about one clip, against the
chat CLI's session and transformers' way (the whole conversation and video through ``generate`` every turn).

An API client resends the whole conversation each turn; the server finds the video's visual tokens by its content
hash and continues the KV cache of the longest shared prefix, so turns 2-5 should cost about what the chat CLI's do.
The model is ``bench_peer.py``'s pair (one LLaVA-NeXT-Video architecture saved by transformers and converted; the
``demo`` size: SmolLM2-135M behind a 4-layer tower, 16 frames), served by ``vllm-i2v serve`` in its own process on a
loopback port (a fresh server each run, warmed up on another clip) and called with the real ``openai`` client
(streaming; the first content chunk is the first token). Every side answers
greedily with a fixed length, and the answers are checked equal. Also: two clients at once on different clips.

    python scripts/bench_api.py --readme README.md      # medians of 3 runs
"""

from __future__ import annotations

import argparse
import base64
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from bench_peer import QUESTIONS, SAMPLE, Ours, Theirs, bench_clips, build_pair
from readme_table import publish


@contextmanager
def server(path: Path, frames: int, new_tokens: int, warm_up: Path):
    """``vllm-i2v serve`` for checkpoint ``path`` in its own process, as a deployment runs it, on a free loopback
    port; yields its base URL once it has answered one request about ``warm_up`` (another clip: the process's
    one-time costs are paid, and nothing of the measured conversation is cached). Stopped on exit."""
    import openai

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "vllm_i2v.cli", "serve", "--model", str(path), "--port", str(port)]
    command += ["--frames", str(frames), "--max-new-tokens", str(new_tokens), "--served-model-name", "bench"]
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise SystemExit(f"vllm-i2v serve exited with {process.returncode}: {log.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=base, api_key="none", max_retries=0, timeout=600)
        api_chat(client, warm_up, QUESTIONS[:1], new_tokens)
        yield client
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def api_chat(client, video: Path, questions: list[str], new_tokens: int) -> list[dict]:
    """One conversation through the API, each turn resending the whole conversation and the video (streamed)."""
    url = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
    messages, turns = [], []
    for n, question in enumerate(questions):
        content = [{"type": "video_url", "video_url": {"url": url}}] if n == 0 else []
        messages.append({"role": "user", "content": content + [{"type": "text", "text": question}]})
        started, first, pieces = time.perf_counter(), None, []
        stream = client.chat.completions.create(
            model="bench",
            messages=messages,
            temperature=0,
            max_tokens=new_tokens,
            stream=True,
            extra_body={"min_tokens": new_tokens},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter()
                pieces.append(chunk.choices[0].delta.content)
        answer = "".join(pieces).strip()
        turns.append({"first_token": first - started, "seconds": time.perf_counter() - started, "answer": answer})
        messages.append({"role": "assistant", "content": answer})
    return turns


def concurrent_answers(client, clips: list[Path]) -> dict[str, str]:
    """Two clients at once, each on its own clip: their answers."""
    results = {}

    def ask(clip: Path):
        url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
        reply = client.chat.completions.create(
            model="bench",
            temperature=0,
            max_tokens=24,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": url}},
                        {"type": "text", "text": QUESTIONS[0]},
                    ],
                }
            ],
        )
        results[clip.name] = reply.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(clip,)) for clip in clips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--readme", help="rewrite the api-bench block of this file")
    args = parser.parse_args()
    turns = QUESTIONS[:5]
    with tempfile.TemporaryDirectory() as tmp:
        theirs_path, ours_path = build_pair("demo", Path(tmp))
        clips = bench_clips(Path(tmp), 3)
        ours, theirs = Ours(ours_path, args.frames, args.new_tokens), Theirs(theirs_path, args.frames, args.new_tokens)

        def through_api():  # a fresh server each run: the video and the conversation start cold
            with server(ours_path, args.frames, args.new_tokens, warm_up=clips[2]) as client:
                return api_chat(client, SAMPLE, turns, args.new_tokens)

        sides = {
            "api": through_api,
            "chat CLI": lambda: ours.chat(SAMPLE, turns),
            "transformers": lambda: theirs.chat(SAMPLE, turns),
        }
        for run in sides.values():  # warm-up
            run()
        runs = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, run in sides.items():
                runs[name].append(run())
        with server(ours_path, args.frames, args.new_tokens, warm_up=clips[2]) as client:
            together = concurrent_answers(client, clips[:2])
            alone = {clip.name: concurrent_answers(client, [clip])[clip.name] for clip in clips[:2]}
    later = {name: statistics.median(t["first_token"] for r in rs for t in r[1:]) for name, rs in runs.items()}
    first = {name: statistics.median(r[0]["first_token"] for r in rs) for name, rs in runs.items()}
    answers = {name: [t["answer"] for t in rs[0]] for name, rs in runs.items()}
    same = answers["api"] == answers["chat CLI"] == answers["transformers"]
    lines = [
        "| | API | chat CLI | transformers | API / chat CLI | API / transformers | target |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| turn 1: time to first token (s) | {first['api']:.3f} | {first['chat CLI']:.3f} | "
        f"{first['transformers']:.3f} | {first['api'] / first['chat CLI']:.2f}x | "
        f"{first['api'] / first['transformers']:.2f}x | |",
        f"| turns 2-5: time to first token (s, median) | {later['api']:.3f} | {later['chat CLI']:.3f} | "
        f"{later['transformers']:.3f} | {later['api'] / later['chat CLI']:.2f}x | "
        f"{later['api'] / later['transformers']:.2f}x | API ≤ 1.5x chat CLI, ≤ 0.1x transformers |",
        "",
        f"Same answers on every side: {'yes' if same else 'NO'}. Two clients at once on different clips: "
        f"{'the same answers as each alone' if together == alone else 'DIFFERENT answers than alone'} "
        f"({len(together)} clips). Medians of {args.repeats} runs, {args.frames} frames, {args.new_tokens} new "
        "tokens a turn.",
    ]
    table = "\n".join(lines)
    publish(table, args.readme, "api-bench")


if __name__ == "__main__":
    main()
