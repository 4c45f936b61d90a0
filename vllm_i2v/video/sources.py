"""Frame sources: one class per kind of input, each decoding only the frames it is asked for.

- :class:`DecordSource` / :class:`PyAVSource`: video files (mp4, avi, mkv, webm, mov, ...);
- :class:`ImageSequenceSource`: a still image (a one-frame video) or an animated GIF/WebP/PNG;
- :class:`FolderSource`: a folder of frame images, in natural sort order.

:func:`open_source` picks the class from the file's content, not its extension.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from ..errors import VideoInputError
from ..logs import quiet_decord

IMAGE_FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF", "PPM", "MPO"}
FRAME_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class FrameSource:
    """Random access to the frames of one input. ``get`` takes sorted, unique indices."""

    backend: str
    num_frames: int
    fps: float

    def __init__(self, path: Path):
        self.path = path

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(frames (K,H,W,3) uint8, timestamps (K,) seconds)`` for sorted unique ``indices``."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DecordSource(FrameSource):
    """Video decoded by decord, which seeks to the requested frames itself."""

    backend = "decord"

    def __init__(self, path: Path):
        super().__init__(path)
        import decord

        quiet_decord()
        self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        self.num_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())

    def get(self, indices):
        idx = [int(i) for i in indices]
        frames = self._reader.get_batch(idx).asnumpy()
        timestamps = self._reader.get_frame_timestamp(idx)[:, 0].astype(np.float64)
        return frames, timestamps


class PyAVSource(FrameSource):
    """Video decoded by PyAV (FFmpeg). Seeks to the keyframe before each far-away target, then decodes forward.

    Frame index ``i`` is the frame whose presentation time is ``start + i / fps`` (exact for constant
    frame rate, nearest-following frame for variable rate). A target past the real end of a stream
    whose header over-counts its frames gets the last decoded frame.
    """

    backend = "pyav"
    SEEK_GAP_SECONDS = 2.0

    def __init__(self, path: Path):
        super().__init__(path)
        import av

        self._av = av
        try:
            self._container = av.open(str(path))
        except av.FFmpegError as exc:  # PyAV's base class: every FFmpeg failure is the one-line error
            raise VideoInputError(path, f"not a readable video or image ({_ffmpeg_reason(exc)})") from None
        try:
            self._probe_stream()
        except av.FFmpegError as exc:
            self._container.close()
            raise VideoInputError(path, f"not a readable video ({_ffmpeg_reason(exc)})") from None
        except VideoInputError:
            self._container.close()
            raise
        self.decoded_frames = 0  # frames the decoder produced, to check that only sampled stretches are decoded

    def _probe_stream(self) -> None:
        """Read the video stream's rate, time base and frame count (demuxing the file when its header lacks them)."""
        if not self._container.streams.video:
            raise VideoInputError(self.path, "contains no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise VideoInputError(self.path, "video stream has no frame rate")
        self.fps = float(rate)
        self._rate = Fraction(rate)
        self._time_base = Fraction(stream.time_base)
        self._start_pts = stream.start_time or 0
        self.num_frames = self._count_frames()

    def _count_frames(self) -> int:
        stream = self._stream
        if stream.frames:
            return int(stream.frames)
        if stream.duration:
            return int(stream.duration * self._time_base * self._rate)
        if self._container.duration:
            return int(Fraction(self._container.duration, self._av.time_base) * self._rate)
        count = sum(1 for packet in self._container.demux(stream) if packet.size)
        self._container.seek(0)
        return count

    def _index_of(self, frame) -> int:
        return int(round((frame.pts - self._start_pts) * self._time_base * self._rate))

    def _pts_of(self, index: int) -> int:
        return int(self._start_pts + Fraction(index) / self._rate / self._time_base)

    def get(self, indices):
        frames, timestamps = [], []
        decoded = None  # generator of frames from the last seek
        last = None  # (index, frame) most recently decoded
        gap = max(1, int(self.SEEK_GAP_SECONDS * self.fps))
        try:
            for target in (int(i) for i in indices):
                if last is None or last[0] < target:
                    if decoded is None or target - last[0] > gap:
                        self._container.seek(self._pts_of(target), stream=self._stream, backward=True, any_frame=False)
                        decoded = self._container.decode(self._stream)
                    for frame in decoded:
                        self.decoded_frames += 1
                        if frame.pts is None:
                            raise VideoInputError(self.path, "video frames carry no timestamps")
                        last = (self._index_of(frame), frame)
                        if last[0] >= target:
                            break
                    else:
                        self._check_stream_end(target, last)
                frames.append(last[1].to_ndarray(format="rgb24"))
                timestamps.append(float(last[1].time))
        except self._av.FFmpegError as exc:
            raise VideoInputError(self.path, f"corrupt video stream ({_ffmpeg_reason(exc)})") from None
        return np.stack(frames), np.asarray(timestamps, dtype=np.float64)

    def _check_stream_end(self, target: int, last) -> None:
        """The stream ended before ``target``: fine for a header that over-counts by a little, else corrupt."""
        if last is None:
            raise VideoInputError(self.path, "contains no decodable frames")
        slack = max(2, self.num_frames // 100)
        if last[0] < self.num_frames - 1 - slack:
            raise VideoInputError(
                self.path,
                f"stream ends at frame {last[0]} of the {self.num_frames} its header declares (truncated or corrupt)",
            )

    def close(self):
        self._container.close()


class ImageSequenceSource(FrameSource):
    """A still image (one frame) or an animated image (GIF, WebP, APNG), read with Pillow."""

    backend = "pillow"

    def __init__(self, path: Path, image: Image.Image):
        super().__init__(path)
        self._image = image
        self.num_frames = getattr(image, "n_frames", 1)
        durations = []
        for frame in ImageSequence.Iterator(image):
            durations.append(max(frame.info.get("duration", 100) or 100, 10) / 1000.0)
        self._starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
        self.fps = 1.0 / float(np.mean(durations)) if self.num_frames > 1 else 1.0

    def get(self, indices):
        frames = []
        for i in indices:
            self._image.seek(int(i))
            frames.append(np.asarray(self._image.convert("RGB")))
        return _stack_same_size(self.path, frames), self._starts[np.asarray(indices)]

    def close(self):
        self._image.close()


class FolderSource(FrameSource):
    """A folder of frame images (``frame_1.jpg``, ``frame_2.jpg``, ... in natural order) at ``fps`` frames a
    second."""

    backend = "folder"

    def __init__(self, path: Path, fps: float = 1.0):
        super().__init__(path)
        self._files = sorted(
            (p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()),
            key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)],
        )
        if not self._files:
            raise VideoInputError(path, f"folder contains no frame images ({', '.join(sorted(FRAME_EXTENSIONS))})")
        self.num_frames = len(self._files)
        self.fps = float(fps)

    def get(self, indices):
        frames = []
        for i in indices:
            file = self._files[int(i)]
            try:
                with Image.open(file) as image:
                    frames.append(np.asarray(image.convert("RGB")))
            except (UnidentifiedImageError, OSError) as exc:
                raise VideoInputError(file, f"not a readable image ({exc})") from None
        return _stack_same_size(self.path, frames), np.asarray(indices, dtype=np.float64) / self.fps


def _stack_same_size(path: Path, frames: list[np.ndarray]) -> np.ndarray:
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise VideoInputError(path, f"frames have different sizes: {sorted(sizes)}")
    return np.stack(frames)


def _ffmpeg_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc).split(":")[0]


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def open_source(path, backend: str = "auto", frames_fps: float = 1.0) -> FrameSource:
    """Open ``path`` (video file, image, animated image, or frame folder) as a :class:`FrameSource`.

    ``backend`` applies to video files: ``auto`` (decord, falling back to PyAV when decord is missing or
    cannot open the file), ``decord`` or ``pyav``. ``frames_fps`` is the frame rate of a frame folder.
    Raises :class:`VideoInputError` with the path and the cause.
    """
    path = Path(path)
    if not path.exists():
        raise VideoInputError(path, "no such file or directory")
    if path.is_dir():
        return FolderSource(path, frames_fps)
    if path.stat().st_size == 0:
        raise VideoInputError(path, "empty file")
    image = _open_image(path)
    if image is not None:
        return ImageSequenceSource(path, image)
    if backend not in ("auto", "decord", "pyav"):
        raise VideoInputError(path, f"unknown video backend {backend!r}; known: auto, decord, pyav")
    # PyAV opens first: it validates the container (a check decord does not survive on every bad file).
    probe = PyAVSource(path)
    if probe.num_frames <= 0:
        probe.close()
        raise VideoInputError(path, "video contains zero frames")
    if backend == "pyav" or (backend == "auto" and not decord_available()):
        return probe
    probe.close()
    try:
        return DecordSource(path)
    except Exception as exc:  # decord raises its own DECORDError (a RuntimeError) or ImportError
        if backend == "decord":
            raise VideoInputError(path, f"decord cannot open it ({str(exc).splitlines()[0]})") from None
        return PyAVSource(path)


def _open_image(path: Path) -> Image.Image | None:
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError):
        return None
    if image.format not in IMAGE_FORMATS:
        image.close()
        return None
    return image
