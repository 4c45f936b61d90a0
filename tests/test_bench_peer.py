"""scripts/bench_peer.py at the tiny size: it runs, and our chat (KV cache kept across turns) and evaluation
(a video prefilled once per batch) answer exactly as transformers' LlavaNextVideoForConditionalGeneration does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_side_by_side_bench_tiny_gives_the_same_answers_both_ways():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_peer.py"), "--sizes", "tiny", "--repeats", "1", "--turns", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout
    assert "| same answers, both sides | yes |" in table
    assert "| 3-turn chat, total (s) |" in table and "fp32 matmul rate" in table and "bigbuckbunny.mp4" in table
