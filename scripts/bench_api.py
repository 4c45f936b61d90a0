"""Time to first token through the OpenAI-compatible API over a 5-turn conversation about one clip, against the
chat CLI's session and transformers' way (the whole conversation and video through ``generate`` every turn).

An API client resends the whole conversation each turn; the server finds the video's visual tokens by its content
hash and continues the KV cache of the longest shared prefix, so turns 2-5 should cost about what the chat CLI's do.
The model is ``bench_peer.py``'s pair (one LLaVA-NeXT-Video architecture saved by transformers and converted; the
``demo`` size: SmolLM2-135M behind a 4-layer tower, 16 frames), served by the real app on a loopback port and
called with the real ``openai`` client (streaming; the first content chunk is the first token). Every side answers
greedily with a fixed length, and the answers are checked equal. Also: two clients at once on different clips.

    python scripts/bench_api.py --readme README.md      # medians of 3 runs
"""

from __future__ import annotations

import argparse
import base64
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench_peer import QUESTIONS, SAMPLE, Ours, Theirs, bench_clips, build_pair
from readme_table import replace_block


def serve(path: Path, frames: int, new_tokens: int):
    """The app (page + /v1) for checkpoint ``path`` on a free loopback port; returns (base URL, stop, forget): forget
    empties the server's caches (visual tokens and KV), so that the next conversation starts cold, as a new one
    does."""
    import socket

    import uvicorn

    from vllm_i2v.models import VideoLLMProcessor, load_model
    from vllm_i2v.web.server import DemoServer

    demo = DemoServer(
        load_model(path).eval(),
        VideoLLMProcessor.from_pretrained(path),
        samples={},
        num_frames=frames,
        max_new_tokens=new_tokens,
        api={"served_name": "bench"},
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(demo.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(timeout=10)
        demo.close()

    def forget():
        demo.api.visuals.entries.clear()
        demo.api.pool.entries.clear()

    return f"http://127.0.0.1:{port}/v1", stop, forget


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
    import openai

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--readme", help="rewrite the api-bench block of this file")
    args = parser.parse_args()
    turns = QUESTIONS[:5]
    with tempfile.TemporaryDirectory() as tmp:
        theirs_path, ours_path = build_pair("demo", Path(tmp))
        clips = bench_clips(Path(tmp), 2)
        ours, theirs = Ours(ours_path, args.frames, args.new_tokens), Theirs(theirs_path, args.frames, args.new_tokens)
        base, stop, forget = serve(ours_path, args.frames, args.new_tokens)
        client = openai.OpenAI(base_url=base, api_key="none", max_retries=0, timeout=600)
        try:
            sides = {
                "api": lambda: forget() or api_chat(client, SAMPLE, turns, args.new_tokens),
                "chat CLI": lambda: ours.chat(SAMPLE, turns),
                "transformers": lambda: theirs.chat(SAMPLE, turns),
            }
            for run in sides.values():  # warm-up
                run()
            runs = {name: [] for name in sides}
            for _ in range(args.repeats):
                for name, run in sides.items():
                    runs[name].append(run())
            together = concurrent_answers(client, clips)
            alone = {clip.name: concurrent_answers(client, [clip])[clip.name] for clip in clips}
        finally:
            stop()
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
        f"({len(clips)} clips). Medians of {args.repeats} runs, {args.frames} frames, {args.new_tokens} new tokens a "
        "turn.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.readme:
        replace_block(args.readme, "api-bench", table)


if __name__ == "__main__":
    main()
