"""Regenerate the bundled sample clip vllm_i2v/assets/sample.mp4 (4 s, 8 fps, 224x224, H.264).

A red square moves left to right, a blue circle stays still, a yellow triangle enters at 2 s and moves down.
Usage: python scripts/make_sample_clip.py [OUT]
"""

import sys
from pathlib import Path

import numpy as np

from vllm_i2v.video.writer import write_video

SIZE, FPS, SECONDS = 224, 8, 4


def draw(t: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    frame = np.full((SIZE, SIZE, 3), 24, dtype=np.uint8)
    x0 = int(20 + (SIZE - 80) * t / SECONDS)
    frame[80:130, x0 : x0 + 50] = (230, 30, 30)  # red square, moving right
    frame[(yy - 170) ** 2 + (xx - 60) ** 2 <= 25**2] = (40, 80, 230)  # blue circle, still
    if t >= 2:
        top = int(10 + 60 * (t - 2))
        inside = (yy >= top) & (yy <= top + 45) & (np.abs(xx - 170) <= (yy - top) / 2)
        frame[inside] = (240, 220, 30)  # yellow triangle, enters at 2 s, moves down
    return frame


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "vllm_i2v/assets/sample.mp4"
    frames = np.stack([draw(i / FPS) for i in range(SECONDS * FPS)])
    write_video(out, frames, fps=FPS)
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(frames)} frames)")


if __name__ == "__main__":
    main()
