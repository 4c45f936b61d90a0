"""Video input: decoding (decord, PyAV fallback), images, GIFs, frame folders, and frame sampling."""

from .reader import VideoClip, read_video
from .sampling import FPSSampler, FrameSampler, SegmentSampler, UniformSampler, make_sampler
from .sources import open_source

__all__ = [
    "FPSSampler",
    "FrameSampler",
    "SegmentSampler",
    "UniformSampler",
    "VideoClip",
    "make_sampler",
    "open_source",
    "read_video",
]
