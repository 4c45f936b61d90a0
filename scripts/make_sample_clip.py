"""Regenerate the bundled sample clip vllm_i2v/assets/sample.mp4: a 4 s shapes-world clip (8 fps, 224x224, H.264).

A red square moves from left to right; a blue circle appears at 0.75 s and stays still; a yellow triangle appears at
1.5 s and moves downwards. Usage: python scripts/make_sample_clip.py [OUT]
"""

import sys
from pathlib import Path

from vllm_i2v.data.shapes import COLORS, Scene, ShapeObject
from vllm_i2v.video.writer import write_video

SIZE, SECONDS = 224, 4.0


def sample_scene() -> Scene:
    last = (SECONDS * 8 - 1) / 8  # time of the last frame: motions end there
    return Scene(
        canvas=SIZE,
        background=24,
        duration=SECONDS,
        objects=[
            ShapeObject("square", "red", COLORS["red"], 56, (10.0, 40.0), "right", 140 / last),
            ShapeObject("circle", "blue", COLORS["blue"], 60, (40.0, 150.0), enter=0.75),
            ShapeObject(
                "triangle", "yellow", COLORS["yellow"], 50, (160.0, 20.0), "down", 130 / (last - 1.5), enter=1.5
            ),
        ],
    )


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "vllm_i2v/assets/sample.mp4"
    scene = sample_scene()
    write_video(out, scene.frames(), fps=scene.fps)
    print(f"wrote {out} ({out.stat().st_size} bytes, {scene.num_frames} frames): {scene.caption()}")


if __name__ == "__main__":
    main()
