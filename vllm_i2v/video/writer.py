"""``write_video``: frames to a file with PyAV, atomically (temp file + rename)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

# container suffix -> (codec, pixel format); H.264 in mp4/mkv/mov plays in browsers
CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
}


def write_video(path, frames: np.ndarray, fps: float = 8.0, codec: str | None = None, gop: int | None = None,
                crf: int = 18) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB to ``path`` at ``fps``; the codec follows the suffix.

    ``gop`` sets the keyframe interval (default: the encoder's). The file appears only once complete.
    """
    import av

    path = Path(path)
    default_codec, pix_fmt = CODECS.get(path.suffix.lower(), ("libx264", "yuv420p"))
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 with T >= 1, got {frames.shape}")
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec or default_codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
        if (codec or default_codec) == "libx264":
            stream.options = {"crf": str(crf)}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path
