"""Frame sampling strategies: which frame indices of a (possibly clipped) video to decode.

A sampler sees only the number of frames available and their rate, never pixels, so that the
reader can seek to exactly the frames it returns. Every sampler returns a sorted int64 array of
indices into ``range(num_available)``; indices may repeat when more frames are asked for than the
video has (documented behaviour: frames are repeated, never invented, never an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError


class FrameSampler:
    """Base class. Subclasses implement :meth:`sample`."""

    def sample(self, num_available: int, fps: float) -> np.ndarray:
        raise NotImplementedError

    def cap(self, max_frames: int) -> FrameSampler:
        """Return a sampler that yields at most ``max_frames`` frames (for a visual-token budget)."""
        raise NotImplementedError


def _check_count(name: str, value: int) -> None:
    if int(value) < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class UniformSampler(FrameSampler):
    """``num_frames`` frames evenly spaced from the first to the last frame (Video-ChatGPT, Video-LLaVA)."""

    num_frames: int

    def __post_init__(self):
        _check_count("num_frames", self.num_frames)

    def sample(self, num_available: int, fps: float) -> np.ndarray:
        return np.rint(np.linspace(0, num_available - 1, self.num_frames)).astype(np.int64)

    def cap(self, max_frames: int) -> UniformSampler:
        return UniformSampler(min(self.num_frames, max_frames))


@dataclass(frozen=True)
class FPSSampler(FrameSampler):
    """Frames at ``fps`` per second of video; if that is more than ``max_frames``, ``max_frames`` uniform ones."""

    fps: float
    max_frames: int = 64

    def __post_init__(self):
        if not self.fps > 0:
            raise ConfigError(f"fps must be positive, got {self.fps}")
        _check_count("max_frames", self.max_frames)

    def sample(self, num_available: int, fps: float) -> np.ndarray:
        step = max(fps / self.fps, 1e-9)
        count = max(1, int(np.floor((num_available - 1) / step)) + 1)
        if count > self.max_frames:
            return UniformSampler(self.max_frames).sample(num_available, fps)
        return np.minimum(np.rint(np.arange(count) * step), num_available - 1).astype(np.int64)

    def cap(self, max_frames: int) -> FPSSampler:
        return FPSSampler(self.fps, min(self.max_frames, max_frames))


@dataclass(frozen=True)
class SegmentSampler(FrameSampler):
    """TSN-style: split the video into ``num_frames`` equal segments and take one frame from each.

    With ``random_offset`` (training) the frame is drawn uniformly inside its segment from ``rng``, or from
    NumPy's global generator when ``rng`` is None (which transformers' Trainer seeds in every dataloader
    worker); without it (evaluation) the segment's middle frame is taken.
    """

    num_frames: int
    random_offset: bool = True
    rng: np.random.Generator | None = field(default=None, compare=False, repr=False)  # repr: feature-cache keys

    def __post_init__(self):
        _check_count("num_frames", self.num_frames)

    def sample(self, num_available: int, fps: float) -> np.ndarray:
        edges = np.linspace(0, num_available, self.num_frames + 1)
        starts, ends = edges[:-1], edges[1:]
        if self.random_offset:
            positions = starts + (self.rng or np.random).random(self.num_frames) * (ends - starts)
        else:
            positions = (starts + ends) / 2
        return np.clip(np.floor(positions), 0, num_available - 1).astype(np.int64)

    def cap(self, max_frames: int) -> SegmentSampler:
        return SegmentSampler(min(self.num_frames, max_frames), self.random_offset, self.rng)


SAMPLERS = {"uniform": UniformSampler, "fps": FPSSampler, "segments": SegmentSampler}


def make_sampler(
    name: str, num_frames: int = 8, fps: float | None = None, random_offset: bool = False, seed: int | None = None
) -> FrameSampler:
    """Build a sampler by name: ``uniform`` (N frames), ``fps`` (rate, N at most), ``segments`` (TSN).

    ``random_offset`` and ``seed`` apply to ``segments`` only (random offsets are for training).
    """
    if name == "uniform":
        return UniformSampler(num_frames)
    if name == "fps":
        if fps is None:
            raise ConfigError("the fps sampler needs a rate (fps=...)")
        return FPSSampler(fps, num_frames)
    if name == "segments":
        rng = np.random.default_rng(seed) if seed is not None else None
        return SegmentSampler(num_frames, random_offset=random_offset, rng=rng)
    raise ConfigError(f"unknown sampler {name!r}; known samplers: {', '.join(SAMPLERS)}")
