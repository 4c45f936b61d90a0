"""Datasets: the three layouts, lossless conversion, row checks, and the training dataset."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image
from tiny import random_frames

from vllm_i2v.cli import main
from vllm_i2v.data import DataError, VideoChatDataset, load_samples
from vllm_i2v.data.commands import check_file, convert_file
from vllm_i2v.models import IGNORE_INDEX
from vllm_i2v.video import SegmentSampler, UniformSampler
from vllm_i2v.video.writer import write_video

LLAVA = [
    {
        "id": "a",
        "video": "clips/a.mp4",
        "conversations": [
            {"from": "human", "value": "<video>\nWhat moves?"},
            {"from": "gpt", "value": "A red square."},
            {"from": "human", "value": "Which way?"},
            {"from": "gpt", "value": "Right."},
        ],
    },
    {
        "id": "b",
        "video": "clips/b.mp4",
        "source": "synthetic",
        "conversations": [{"from": "human", "value": "<video>\nHow many objects?"}, {"from": "gpt", "value": "Two."}],
    },
]
VCG = [
    {"video_id": "b", "q": "How many objects?", "a": "Two."},
    {"video_id": "a", "q": "What moves?", "a": "A red square."},
]
VIDEOCHAT2 = [
    {
        "video": "clips/a.mp4",
        "QA": [
            {"i": "Watch the video and answer.", "q": "What moves?", "a": "A red square."},
            {"i": "", "q": "Which way?", "a": "Right."},
        ],
    }
]


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "clips").mkdir()
    for name in ("a", "b"):
        write_video(root / "clips" / f"{name}.mp4", random_frames(12, 32, 32, seed=ord(name)), fps=4)
    write_video(root / "a.mp4", random_frames(12, 32, 32), fps=4)
    write_video(root / "b.mkv", random_frames(12, 32, 32), fps=4)
    (root / "clips" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    (root / "clips" / "empty.mp4").write_bytes(b"")
    (root / "clips" / "notes.mp4").write_text("not a video at all\n")
    return root


def dump(path, records, jsonl=False):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) if jsonl else json.dumps(records))
    return path


@pytest.mark.parametrize("jsonl", [False, True])
def test_layouts_read_into_one_form(tmp_path, jsonl):
    llava = load_samples(dump(tmp_path / "l.json", LLAVA, jsonl))
    assert llava[0].messages == [
        {"role": "user", "content": "<video>\nWhat moves?"},
        {"role": "assistant", "content": "A red square."},
        {"role": "user", "content": "Which way?"},
        {"role": "assistant", "content": "Right."},
    ]
    assert llava[0].video == "clips/a.mp4" and llava[1].extra == {"source": "synthetic"}
    assert llava[1].source.endswith(":2" if jsonl else "[1]")
    vcg = load_samples(dump(tmp_path / "v.json", VCG, jsonl))
    assert vcg[0].video == "b" and vcg[0].messages[0]["content"] == "<video>\nHow many objects?"
    chat2 = load_samples(dump(tmp_path / "c.json", VIDEOCHAT2, jsonl))
    assert chat2[0].messages[0] == {"role": "system", "content": "Watch the video and answer."}
    assert [m["role"] for m in chat2[0].messages[1:]] == ["user", "assistant"] * 2


@pytest.mark.parametrize(
    "records, via", [(LLAVA, "videochat2"), (VIDEOCHAT2, "llava"), (VCG, "llava"), (VCG, "videochat2")]
)
def test_conversion_round_trips(tmp_path, records, via):
    src = dump(tmp_path / "src.json", records)
    back_to = {id(LLAVA): "llava", id(VCG): "vcg", id(VIDEOCHAT2): "videochat2"}[id(records)]
    convert_file(src, tmp_path / "mid.jsonl", via)
    convert_file(tmp_path / "mid.jsonl", tmp_path / "back.json", back_to)
    assert json.loads((tmp_path / "back.json").read_text()) == records  # every field, ids included


# one question per row, ids and extra fields: what every layout can hold
SINGLE_TURN = {
    "llava": [
        {
            "id": "train_00000_0",
            "video": "train_00000.mp4",
            "type": "counting",
            "conversations": [
                {"from": "human", "value": "<video>\nHow many objects are there?"},
                {"from": "gpt", "value": "2"},
            ],
        },
        {
            "video": "b.mp4",
            "conversations": [{"from": "human", "value": "<video>\nWhat moves?"}, {"from": "gpt", "value": "A star."}],
        },
    ],
    "vcg": [
        {"id": "q1", "video_id": "v_abc", "q": "What moves?", "a": "A star.", "split": "val"},
        {"video_id": "v_def", "q": "How many?", "a": "2"},
    ],
    "videochat2": [
        {"id": 7, "video": "clips/a.mp4", "QA": [{"i": "", "q": "What moves?", "a": "A star."}], "source": "x"},
        {"video": "clips/b.mp4", "QA": [{"i": "", "q": "How many?", "a": "2"}]},
    ],
}


@pytest.mark.parametrize("layout, via", [(a, b) for a in SINGLE_TURN for b in SINGLE_TURN if a != b])
def test_single_question_rows_round_trip_through_every_layout(tmp_path, layout, via):
    src = dump(tmp_path / "src.json", SINGLE_TURN[layout])
    convert_file(src, tmp_path / "mid.jsonl", via)
    convert_file(tmp_path / "mid.jsonl", tmp_path / "back.json", layout)
    assert json.loads((tmp_path / "back.json").read_text()) == SINGLE_TURN[layout]


def test_conversion_never_overwrites_by_accident(tmp_path, capsys):
    src = dump(tmp_path / "l.json", LLAVA)
    before = src.read_text()
    assert main(["data", "convert", str(src), str(src), "--to", "llava", "--overwrite"]) == 2
    assert "is the source file" in capsys.readouterr().err and src.read_text() == before
    (tmp_path / "out.json").write_text("keep me")
    assert main(["data", "convert", str(src), str(tmp_path / "out.json"), "--to", "videochat2"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and (tmp_path / "out.json").read_text() == "keep me"
    assert main(["data", "convert", str(src), str(tmp_path / "out.json"), "--to", "videochat2", "--overwrite"]) == 0
    assert json.loads((tmp_path / "out.json").read_text())[0]["QA"][0]["q"] == "What moves?"


def test_conversion_refuses_what_the_target_cannot_hold(tmp_path):
    src = dump(tmp_path / "l.json", LLAVA)
    with pytest.raises(DataError, match=r"l.json\[0\]: cannot convert to vcg: 2 turns"):
        convert_file(src, tmp_path / "out.json", "vcg")
    assert not (tmp_path / "out.json").exists()  # nothing half-written
    read, written = convert_file(src, tmp_path / "out.json", "vcg", split_turns=True)
    assert (read, written) == (2, 3)
    with pytest.raises(DataError, match="cannot hold a system instruction"):
        convert_file(dump(tmp_path / "c.json", VIDEOCHAT2), tmp_path / "out2.json", "vcg", split_turns=True)


BAD_ROWS = [
    (
        {
            "video": "clips/missing.mp4",
            "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}],
        },
        "not found under",
    ),
    (
        {
            "video": "../outside.mp4",
            "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}],
        },
        "leads outside the video root",
    ),
    (
        {"video": "clips/a.mp4", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
        "0 <video> placeholders",
    ),
    (
        {
            "video": "clips/a.mp4",
            "conversations": [{"from": "human", "value": "<video><video>\nQ"}, {"from": "gpt", "value": "A"}],
        },
        "2 <video> placeholders",
    ),
    (
        {
            "video": "clips/a.mp4",
            "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": " "}],
        },
        "turn 2 (assistant) is empty",
    ),
    (
        {
            "video": "clips/a.mp4",
            "conversations": [{"from": "gpt", "value": "<video>\nA"}, {"from": "human", "value": "Q"}],
        },
        "do not alternate",
    ),
    ({"video": "clips/a.mp4", "conversations": [{"from": "human", "value": "<video>\nQ"}]}, "nothing to train on"),
    ({"video": "clips/a.mp4", "conversations": [{"from": "robot", "value": "<video>\nQ"}]}, "unknown speaker 'robot'"),
    ({"video": "clips/a.mp4"}, "not a known layout"),
    (
        {"video": 5, "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}]},
        "video must be a file name (a string), got 5",
    ),
    (
        {"video": "", "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}]},
        'video is "", not a file name',
    ),
    (
        {"video": ".", "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}]},
        'video is ".", not a file name',
    ),
    (
        {
            "video": "clips/..",
            "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}],
        },
        "names the video root itself",
    ),
    (
        {
            "video": "clips/a.mp4",
            "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": None}],
        },
        "turn 2 (assistant) is null, not text",
    ),
    (
        {
            "video": "clips/corrupt.mp4",
            "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}],
        },
        "clips/corrupt.mp4: not a readable video",
    ),
    (
        {
            "video": "clips/empty.mp4",
            "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}],
        },
        "clips/empty.mp4: empty file",
    ),
    (
        {
            "video": "clips/notes.mp4",
            "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}],
        },
        "clips/notes.mp4: not a readable video",
    ),
]


@pytest.mark.parametrize("jsonl", [False, True])
def test_check_names_every_bad_row(tmp_path, video_root, jsonl):
    good = LLAVA[1]
    path = dump(tmp_path / "mixed.json", [good] + [row for row, _ in BAD_ROWS], jsonl)
    report = check_file(path, video_root)
    problems = report.problems
    assert report.rows == len(BAD_ROWS) + 1 and report.bad_rows == len(BAD_ROWS)
    for n, (_, cause) in enumerate(BAD_ROWS, start=1):
        where = f"mixed.json:{n + 1}: " if jsonl else f"mixed.json[{n}]: "
        assert any(where in line and cause in line for line in problems), (where, cause, problems)
    assert not any(("mixed.json:1: " if jsonl else "mixed.json[0]: ") in line for line in problems)
    assert report.kinds["video not decodable"] == 3 and report.kinds["unreadable row"] == 6
    assert "3 video not decodable" in report.summary(path)
    fast = check_file(path, video_root, decode=False)  # paths and text only: the undecodable files pass
    assert fast.bad_rows == len(BAD_ROWS) - 3 and "video not decodable" not in fast.kinds


def test_check_finds_images_under_their_own_root(tmp_path, video_root, capsys):
    """``--image-root``: a dataset of clips and stills kept in separate folders (LLaVA's video and image folders)."""
    images = tmp_path / "stills"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(images / "a.png")
    question = [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]
    path = dump(
        tmp_path / "joint.json", [LLAVA[1], *({"image": n, "conversations": question} for n in ("a.png", "b.png"))]
    )
    assert main(["data", "check", str(path), "--video-root", str(video_root), "--image-root", str(images)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}[2]: image 'b.png' not found under {images}",
        f"{path}: 3 rows, 1 with problems (1 image path)",
    ]


def test_check_reads_past_bad_lines_and_bytes(tmp_path, video_root, capsys):
    good = json.dumps(LLAVA[1]).encode()
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(good + b'\n{"video": "clips/\xff.mp4"}\n' + b"{not json\n" + good + b"\n")
    assert main(["data", "check", str(path), "--video-root", str(video_root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}:2: not UTF-8 text (byte 17 of the line)"
    assert out[1].startswith(f"{path}:3: not valid JSON")
    assert out[2] == f"{path}: 4 rows, 2 with problems (2 unreadable row)"
    listing = tmp_path / "list.json"
    listing.write_bytes(b'[{"id": "\xff"}]')
    assert main(["data", "check", str(listing)]) == 2  # a JSON list that cannot be read is one error for the file
    assert capsys.readouterr().err.strip() == f"error: {listing}: not UTF-8 text (byte 9)"


def test_check_against_the_model_context(tmp_path, video_root, saved_model):
    long_answer = "word " * 600  # the tiny LLM's context is 512 tokens
    path = dump(
        tmp_path / "long.json",
        [
            {
                "video": "clips/a.mp4",
                "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": long_answer}],
            }
        ],
    )
    assert main(["data", "check", str(path), "--video-root", str(video_root), "--model", str(saved_model)]) == 1
    assert (
        main(
            [
                "data",
                "check",
                str(dump(tmp_path / "ok.json", LLAVA)),
                "--video-root",
                str(video_root),
                "--model",
                str(saved_model),
            ]
        )
        == 0
    )


def test_check_and_convert_commands(tmp_path, video_root, capsys):
    assert main(["data", "check", str(dump(tmp_path / "v.json", VCG)), "--video-root", str(video_root)]) == 0
    assert "2 rows, 0 with problems" in capsys.readouterr().out
    bad = dump(tmp_path / "bad.jsonl", [BAD_ROWS[0][0], BAD_ROWS[2][0]], jsonl=True)
    assert main(["data", "check", str(bad), "--video-root", str(video_root)]) == 1
    out = capsys.readouterr().out
    assert "bad.jsonl:1: video 'clips/missing.mp4' not found" in out and "2 rows, 2 with problems" in out
    assert main(["data", "convert", str(tmp_path / "v.json"), str(tmp_path / "v_llava.jsonl"), "--to", "llava"]) == 0
    assert len((tmp_path / "v_llava.jsonl").read_text().splitlines()) == 2


def test_dataset_rows_have_labels_only_on_answers(build, tmp_path, video_root):
    _, processor = build("stpool")
    samples = load_samples(dump(tmp_path / "l.json", LLAVA))
    dataset = VideoChatDataset(samples, processor, video_root, SegmentSampler(4))
    row = dataset[0]
    assert row["pixel_values"][0].shape == (4, 3, 32, 32)
    supervised = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    assert processor.tokenizer.decode(supervised) == "A red square.<|im_end|>\nRight.<|im_end|>\n"
    batch = processor.collate([dataset[0], dataset[1]])
    assert batch["frame_counts"].tolist() == [4, 4] and batch["labels"].shape == batch["input_ids"].shape


def test_dataset_skips_bad_rows_and_corrupt_videos(build, tmp_path, video_root, caplog):
    _, processor = build("stpool")
    rows = [LLAVA[1], BAD_ROWS[0][0], {**LLAVA[1], "video": "clips/corrupt.mp4"}]
    samples = load_samples(dump(tmp_path / "mixed.json", rows))
    with caplog.at_level(logging.WARNING):
        dataset = VideoChatDataset(samples, processor, video_root, UniformSampler(4))
        assert len(dataset) == 2  # the row with a missing video is dropped up front
        row = dataset[1]  # the corrupt video: logged, replaced by the next row
    assert "skipped 1 of 3 rows" in caplog.text and "corrupt.mp4" in caplog.text
    assert np.asarray(row["pixel_values"][0]).shape[0] == 4
    with pytest.raises(DataError, match=r"mixed.json\[1\]: video 'clips/missing.mp4' not found"):
        VideoChatDataset(samples, processor, video_root, UniformSampler(4), strict=True)


def test_dataset_skips_a_hung_decoder(build, tmp_path, video_root, monkeypatch, caplog):
    import threading

    from vllm_i2v.video import sources

    release = threading.Event()
    real_get = {cls: cls.get for cls in (sources.DecordSource, sources.PyAVSource)}

    def patched(cls):
        def get(self, indices):
            if self.path.name == "a.mp4":
                release.wait(30)
            return real_get[cls](self, indices)

        return get

    for cls in real_get:
        monkeypatch.setattr(cls, "get", patched(cls))
    _, processor = build("stpool")
    samples = load_samples(dump(tmp_path / "l.json", [LLAVA[0], LLAVA[1]]))
    dataset = VideoChatDataset(samples, processor, video_root, UniformSampler(4), decode_timeout=0.5)
    with caplog.at_level(logging.WARNING):
        row = dataset[0]  # clips/a.mp4 hangs: skipped, clips/b.mp4 served
    release.set()
    assert "decoding took longer than 0.5s" in caplog.text
    supervised = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    assert processor.tokenizer.decode(supervised) == "Two.<|im_end|>\n"
