"""The bad-input table every command shares: each careless or hostile input is one line naming the user's file,
with the documented exit code or HTTP status, no traceback, no server path, and nothing left behind.

Commands: ``chat``, ``encode``, ``data check``, ``train --strict``, ``eval`` (bad videos are counted and listed, the
run goes on) and the web demo's upload (``tests/test_web.py`` runs the same table over HTTP: ``BAD_VIDEOS``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from tiny import random_frames

from vllm_i2v.cli import main
from vllm_i2v.video.writer import write_video


def _mp4(path: Path, faststart: bool) -> Path:
    """A real 24-frame H.264 mp4, its index (moov) at the end or, with ``faststart``, at the start."""
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"} if faststart else {}) as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for image in random_frames(24, 64, 64):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


def _truncated(path: Path, faststart: bool) -> None:
    whole = _mp4(path.with_name("whole-" + path.name), faststart)
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    whole.unlink()


UNREADABLE = ("not a readable video", "contains no decodable frames")  # FFmpeg's probe follows a .png name
# name -> (make the file at the given path, a phrase (or phrases, one of which) the one-line error must hold)
BAD_VIDEOS = {
    "missing": (lambda p: None, "no such file or directory"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "directory": (lambda p: p.mkdir(), "folder contains no frame images"),
    "noise": (
        lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()),
        UNREADABLE,
    ),
    "text": (lambda p: p.write_text("these are my notes, not a video\n" * 20), UNREADABLE),
    "png magic": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100), UNREADABLE),
    "header only": (lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"), UNREADABLE),
    "truncated, index at the end": (lambda p: _truncated(p, faststart=False), UNREADABLE),
    "truncated, index at the start": (lambda p: _truncated(p, faststart=True), "truncated or corrupt"),
}
NAMES = {"plain": "clip.mp4", "unicode and spaces": "my clip ünï café.mp4", "wrong extension": "clip.png"}


def bad_video(root: Path, kind: str, name: str = "clip.mp4") -> tuple[Path, str]:
    path = root / kind.replace(" ", "-").replace(",", "") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    BAD_VIDEOS[kind][0](path)
    return path, BAD_VIDEOS[kind][1]


def assert_one_line(stderr: str, path, phrase: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    phrases = (phrase,) if isinstance(phrase, str) else phrase
    assert lines[0].startswith(f"error: {path}:") and any(p in lines[0] for p in phrases), lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
@pytest.mark.parametrize("kind", BAD_VIDEOS)
def test_chat_and_encode(kind, name, tmp_path, saved_model, capsys):
    path, phrase = bad_video(tmp_path, kind, name)
    before = sorted(tmp_path.rglob("*"))
    assert (
        main(["chat", "--model", str(saved_model), "--video", str(path), "--question", "Hi?", "--max-new-tokens", "8"])
        == 2
    )
    assert_one_line(capsys.readouterr().err, path, phrase)
    assert main(["encode", str(path), "--model", str(saved_model)]) == 2
    out = capsys.readouterr()
    assert_one_line(out.err, path, phrase)
    assert out.out == "" and sorted(tmp_path.rglob("*")) == before  # nothing printed as a result, nothing written


def test_a_valid_clip_with_a_wrong_extension_or_unicode_name_is_read_by_content(tmp_path, saved_model, capsys):
    clip = tmp_path / "my clip ünï.png"
    write_video(tmp_path / "real.mp4", random_frames(12, 32, 32), fps=4)
    shutil.move(tmp_path / "real.mp4", clip)
    assert (
        main(
            [
                "chat",
                "--model",
                str(saved_model),
                "--video",
                str(clip),
                "--question",
                "Hi?",
                "--json",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["video"] == str(clip)


def test_data_check_names_every_bad_video(tmp_path, capsys):
    root = tmp_path / "videos"
    rows = []
    for kind in BAD_VIDEOS:
        path, _ = bad_video(root, kind, "my clip ünï.mp4")
        rows.append(
            {
                "video": str(path.relative_to(root)),
                "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}],
            }
        )
    outside = tmp_path / "outside.mp4"
    write_video(outside, random_frames(8, 32, 32), fps=4)
    rows.append({"video": "../outside.mp4", "conversations": rows[0]["conversations"]})
    (tmp_path / "train.json").write_text(json.dumps(rows, ensure_ascii=False))
    assert main(["data", "check", str(tmp_path / "train.json"), "--video-root", str(root)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(rows) + 1 and "Traceback" not in "\n".join(lines)
    for n, kind in enumerate(BAD_VIDEOS):
        phrases = ("not found under",) if kind == "missing" else BAD_VIDEOS[kind][1]
        phrases = (phrases,) if isinstance(phrases, str) else phrases
        assert lines[n].startswith(f"{tmp_path / 'train.json'}[{n}]: ") and any(p in lines[n] for p in phrases), lines[
            n
        ]
    assert "leads outside the video root" in lines[-2]
    assert lines[-1].endswith(f"{len(rows)} with problems (8 video not decodable, 2 video path)")


def test_train_strict_stops_at_a_bad_video_with_one_line(tmp_path, saved_model, capsys):
    root = tmp_path / "videos"
    path, phrase = bad_video(root, "truncated, index at the start", "bad clip.mp4")
    row = {
        "video": "truncated-index-at-the-start/bad clip.mp4",
        "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}],
    }
    (tmp_path / "train.json").write_text(json.dumps([row]))
    config = {
        "model": str(saved_model),
        "data": {"train": str(tmp_path / "train.json"), "video_root": str(root), "num_frames": 2},
        "trainable": {"projector": True},
        "training": {"output_dir": str(tmp_path / "out"), "max_steps": 1, "dataloader_num_workers": 0},
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "train.yaml"), "--strict"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith(f"error: {path}: ") and phrase in last, err
    assert not (tmp_path / "out" / "final").exists()


def test_eval_lists_bad_videos_and_goes_on(tmp_path, saved_model):
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    write_video(root / "videos" / "good.mp4", random_frames(8, 32, 32), fps=4)
    rows = [{"id": "good_0", "video": "good.mp4", "type": "counting", "question": "How many?", "answer": "1"}]
    for n, kind in enumerate(k for k in BAD_VIDEOS if k != "missing"):
        path, _ = bad_video(root / "videos", kind)
        rows.append(
            {
                "id": f"bad_{n}",
                "video": str(path.relative_to(root / "videos")),
                "type": "counting",
                "question": "How many?",
                "answer": "1",
            }
        )
    (root / "test_qa.json").write_text(json.dumps(rows))
    out = tmp_path / "run"
    assert main(["eval", "shapes", "--model", str(saved_model), "--data", str(root), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["missing"] == len(rows) - 1 and metrics["answered"] == 1
    assert "not a readable video" in (out / "report.md").read_text()


@pytest.mark.parametrize("breakage", ["truncated weights", "invalid config", "no weights", "another model"])
def test_every_command_that_loads_a_model_refuses_a_broken_one_in_one_line(breakage, tmp_path, saved_model, capsys):
    broken = tmp_path / "model"
    shutil.copytree(saved_model, broken)
    weights = broken / "model.safetensors"
    if breakage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        phrase = f"{weights}: truncated"
    elif breakage == "invalid config":
        (broken / "config.json").write_text("{not json")
        phrase = f"{broken / 'config.json'}: not valid JSON"
    elif breakage == "no weights":
        weights.unlink()
        phrase = f"{broken}: not a VideoLLM checkpoint (no model.safetensors"
    else:
        config = json.loads((broken / "config.json").read_text())
        (broken / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
        phrase = f"{broken}: not a VideoLLM checkpoint (config.json is a 'llama' model)"
    clip = tmp_path / "clip.mp4"
    write_video(clip, random_frames(8, 32, 32), fps=4)
    commands = [
        ["chat", "--model", str(broken), "--video", str(clip), "--question", "Hi?", "--max-new-tokens", "8"],
        ["encode", str(clip), "--model", str(broken)],
        ["merge", str(broken), str(tmp_path / "merged")],
        ["eval", "shapes", "--model", str(broken), "--out", str(tmp_path / "eval"), "--data", str(tmp_path)],
        ["data", "check", str(tmp_path / "none.json"), "--model", str(broken)],
    ]
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error: ") and phrase in err, (command, err)
    assert not (tmp_path / "merged").exists() and not (tmp_path / "eval").exists()
