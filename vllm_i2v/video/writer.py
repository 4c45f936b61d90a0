"""``write_video``: frames to a file with PyAV, atomically (temp file + rename)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import atomic_path

# container suffix -> (codec, pixel format); H.264 in mp4/mkv/mov plays in browsers
CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
}


def write_video(
    path,
    frames: Iterable[np.ndarray],
    fps: float = 8.0,
    codec: str | None = None,
    gop: int | None = None,
    crf: int = 18,
) -> Path:
    """Encode ``frames`` ((T, H, W, 3) uint8 RGB, or any iterable of (H, W, 3) frames) to ``path`` at ``fps``.

    The codec follows the suffix; ``gop`` sets the keyframe interval (default: the encoder's). The file
    appears only once complete.
    """
    import av

    path = Path(path)
    default_codec, pix_fmt = CODECS.get(path.suffix.lower(), ("libx264", "yuv420p"))
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = None
        for image in frames:
            image = np.asarray(image, dtype=np.uint8)
            if image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got {image.shape}")
            if stream is None:
                stream = container.add_stream(codec or default_codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = image.shape[1], image.shape[0]
                stream.pix_fmt = pix_fmt
                if gop:
                    stream.codec_context.gop_size = gop
                if (codec or default_codec) == "libx264":
                    stream.options = {"crf": str(crf)}
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError("no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return path
