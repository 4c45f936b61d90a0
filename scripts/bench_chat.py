"""Chat speed with the bundled model: first answer wall time from a cold process, and later-turn time to first token.

1. ``vllm-i2v chat --video CLIP --question Q1`` in a fresh process, timed from launch to exit (Python start,
   imports, model load, decode, encode, prefill, generation: everything a user waits for). Repeated ``--runs``
   times; the first run also converts SmolLM2 into the cache if that was never done (reported separately).
2. In one process, a chat of several turns, as `vllm-i2v chat` asks them: time to first token of every turn after
   the first (the video is not re-read: its KV cache is reused, and the bundled model, trained on independent turns,
   prefills only each new question).

    python scripts/bench_chat.py                      # the bundled sample clip, 3 cold runs, 4 later turns
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "How many objects are there?",
    "What color is the square?",
    "Which direction does the red square move?",
    "Which object appears first?",
    "Is the blue circle moving or still?",
]


def cold_answer(video: str, question: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "vllm_i2v.cli", "chat", "--video", video, "--question", question],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, done.stdout.strip()


def later_turns(video: str) -> list[float]:
    from vllm_i2v.bundled import DEFAULT_MODEL
    from vllm_i2v.chat import ChatSession
    from vllm_i2v.models import VideoLLMProcessor
    from vllm_i2v.models.checkpoint import load_model

    session = ChatSession(load_model(DEFAULT_MODEL), VideoLLMProcessor.from_pretrained(DEFAULT_MODEL))
    session.set_video(video)
    firsts = []
    for n, question in enumerate(QUESTIONS):
        answer, times = session.ask(question)
        print(f"  turn {n + 1}: {question!r} -> {answer!r} ({times.describe()})")
        if n:
            firsts.append(times.first_token)
    return firsts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=str(ROOT / "vllm_i2v/assets/sample.mp4"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    warm, answer = cold_answer(args.video, QUESTIONS[0])
    print(f"first run (converts SmolLM2 into the cache if needed): {warm:.2f} s -> {answer!r}")
    walls = [cold_answer(args.video, QUESTIONS[0])[0] for _ in range(args.runs)]
    print(
        f"first answer, cold process: median {statistics.median(walls):.2f} s "
        f"(runs: {', '.join(f'{w:.2f}' for w in walls)})"
    )
    firsts = later_turns(args.video)
    print(f"later turns, time to first token: median {statistics.median(firsts):.3f} s, max {max(firsts):.3f} s")


if __name__ == "__main__":
    main()
