"""``read_video``: one call from a path and a sampler to frames and their timestamps."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VideoInputError
from .sampling import FrameSampler, UniformSampler
from .sources import PyAVSource, open_source


@dataclass
class VideoClip:
    """Frames sampled from one input, with where they came from."""

    frames: np.ndarray  # (T, H, W, 3) uint8, RGB
    timestamps: np.ndarray  # (T,) seconds from the start of the video
    indices: np.ndarray  # (T,) frame indices in the source
    fps: float  # the source's frame rate
    num_source_frames: int
    path: str
    backend: str

    @property
    def duration(self) -> float:
        """Length of the whole source in seconds."""
        return self.num_source_frames / self.fps


def read_video(
    path,
    sampler: FrameSampler | None = None,
    start: float | None = None,
    end: float | None = None,
    backend: str = "auto",
    frames_fps: float = 1.0,
    max_frames: int | None = None,
    timeout: float | None = None,
) -> VideoClip:
    """Decode the frames ``sampler`` picks from ``path``, seeking to each, never decoding the whole video.

    ``path`` may be a video file, a still image (a one-frame video), an animated GIF, or a folder of frames
    (at ``frames_fps``). ``start``/``end`` (seconds) clip the video before sampling. ``max_frames`` caps the
    sampler (see :meth:`vllm_i2v.models.VideoLLMProcessor.max_frames`). When more frames are asked for
    than the clip has, frames repeat. Bad input raises :class:`VideoInputError` naming the file and cause.
    With ``timeout`` (seconds), a decoder that hangs is abandoned and the call raises :class:`VideoInputError`
    (decoders hang on some files; a training run skips the row instead of stalling).
    """
    if timeout is not None:
        return _within(timeout, path, read_video, path, sampler, start, end, backend, frames_fps, max_frames)
    sampler = sampler or UniformSampler(8)
    if max_frames is not None:
        sampler = sampler.cap(max_frames)
    source = open_source(path, backend=backend, frames_fps=frames_fps)
    try:
        first, last = _window(source.path, source.num_frames, source.fps, start, end)
        indices = sampler.sample(last - first + 1, source.fps) + first
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            frames, timestamps = source.get(unique)
        except VideoInputError:
            raise
        except Exception as exc:  # decord fails on some streams PyAV decodes
            if backend != "auto" or isinstance(source, PyAVSource):
                raise VideoInputError(source.path, f"corrupt video stream ({str(exc).splitlines()[0]})") from None
            source.close()
            source = PyAVSource(Path(path))
            frames, timestamps = source.get(unique)
        return VideoClip(
            frames=frames[inverse],
            timestamps=timestamps[inverse],
            indices=indices,
            fps=source.fps,
            num_source_frames=source.num_frames,
            path=str(path),
            backend=source.backend,
        )
    finally:
        source.close()


def _window(path, num_frames: int, fps: float, start: float | None, end: float | None) -> tuple[int, int]:
    """Frame index range ``[first, last]`` covered by ``[start, end]`` seconds."""
    if num_frames <= 0:
        raise VideoInputError(path, "contains zero frames")
    first = 0 if start is None else int(np.ceil(max(start, 0.0) * fps - 1e-6))
    last = num_frames - 1 if end is None else min(num_frames - 1, int(np.floor(end * fps + 1e-6)))
    if start is not None and end is not None and end <= start:
        raise VideoInputError(path, f"end time {end}s is not after start time {start}s")
    if first > last:
        raise VideoInputError(
            path,
            f"no frames between {start or 0}s and {end if end is not None else 'the end'} "
            f"(the video is {num_frames / fps:.2f}s long)",
        )
    return first, last


def _within(timeout: float, path, fn, *args):
    """Run ``fn(*args)`` in a daemon thread; past ``timeout`` seconds, leave it behind and raise."""
    result: dict = {}

    def work():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller below
            result["error"] = exc

    thread = threading.Thread(target=work, name=f"decode {path}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise VideoInputError(path, f"decoding took longer than {timeout:g}s (a hung decoder); skipped")
    if "error" in result:
        raise result["error"]
    return result["value"]
