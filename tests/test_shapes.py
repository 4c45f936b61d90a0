"""The shapes world: determinism, the spec's constraints measured on rendered frames, QA truth, splits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vllm_i2v.cli import main
from vllm_i2v.data import load_samples
from vllm_i2v.data.shapes import (
    COLORS,
    FPS,
    HELD_OUT_COMBOS,
    LONG_DURATIONS,
    TRAIN_DURATIONS,
    ShapeObject,
    scene_for,
    write_split,
)
from vllm_i2v.video import UniformSampler, read_video


def color_mask(frame: np.ndarray, rgb) -> np.ndarray:
    return np.abs(frame.astype(int) - np.array(rgb)).max(axis=-1) <= 16


def test_same_seed_same_world():
    a, b = scene_for(7, 3), scene_for(7, 3)
    np.testing.assert_array_equal(np.stack(list(a.frames())), np.stack(list(b.frames())))
    assert a.questions == b.questions
    assert scene_for(8, 3).questions != a.questions or scene_for(8, 3).caption() != a.caption()


@pytest.mark.parametrize("split,index", [("train", i) for i in range(12)] + [("together", i) for i in range(4)])
def test_scenes_meet_the_spec(split, index):
    scene = scene_for(0, index, split)
    assert TRAIN_DURATIONS[0] <= scene.duration <= TRAIN_DURATIONS[1] and scene.fps == FPS
    assert (2 if split == "together" else 1) <= len(scene.objects) <= 3 and 0 <= scene.background <= 64
    assert len({o.shape for o in scene.objects}) == len({o.color for o in scene.objects}) == len(scene.objects)
    frames = np.stack(list(scene.frames()))
    for obj in scene.objects:
        assert 0.2 * 224 <= obj.size <= 0.3 * 224 + 1
        assert np.abs(np.array(obj.rgb) - np.array(COLORS[obj.color])).max() <= 12
        positions = []
        for t, frame in enumerate(frames):
            mask = color_mask(frame, obj.rgb)
            visible = t / FPS >= obj.enter
            assert mask.any() == visible, (obj.name, t)
            if visible:
                ys, xs = np.nonzero(mask)
                positions.append((xs.mean(), ys.mean()))
        shift = np.array(positions[-1]) - np.array(positions[0])  # centroids: another object may occlude a little
        axis = int(np.argmax(np.abs(shift)))
        if obj.direction:  # straight, over at least 40% of the canvas, the right way
            assert abs(shift[axis]) >= 0.4 * 224 - 0.1 * obj.size, (obj.name, shift)
            assert {(0, 1): "right", (0, -1): "left", (1, 1): "down", (1, -1): "up"}[
                (axis, int(np.sign(shift[axis])))
            ] == obj.direction
        else:
            assert np.abs(shift).max() < 0.1 * obj.size, (obj.name, shift)


def test_questions_are_true_of_the_scene():
    seen = set()
    for index in range(40):
        scene = scene_for(1, index, "test")
        by_name = {o.name: o for o in scene.objects}
        for qa in scene.questions:
            seen.add(qa["type"])
            question, answer = qa["question"], qa["answer"]
            if question == "How many objects are there?":
                assert answer == str(len(scene.objects))
            elif question.startswith("Which direction does the"):
                assert by_name[question[len("Which direction does the ") : -len(" move?")]].direction == answer
            elif question.startswith("Is the"):
                obj = by_name[question[len("Is the ") : -len(" moving or still?")]]
                assert answer == ("moving" if obj.direction else "still")
            elif question == "Which object appears first?":
                first = min(scene.objects, key=lambda o: o.enter)
                assert answer == f"the {first.name}"
                assert sorted(o.enter for o in scene.objects)[1] - first.enter >= 0.5
            elif question.startswith("What color is the"):
                assert any(o.color == answer and question.endswith(f"the {o.shape}?") for o in scene.objects)
            elif question.startswith("What shape is the"):
                assert any(o.shape == answer and f"the {o.color} object" in question for o in scene.objects)
    assert seen == {"attribute", "counting", "motion", "temporal", "caption"}


def test_held_out_splits():
    for index in range(60):
        combos = {(o.color, o.shape) for o in scene_for(0, index, "train").objects}
        assert not combos & HELD_OUT_COMBOS
    for index in range(40):  # together: training pairs, every object in view from the first frame
        objects = scene_for(0, index, "together").objects
        assert len(objects) >= 2 and all(o.enter == 0 for o in objects)
        assert not {(o.color, o.shape) for o in objects} & HELD_OUT_COMBOS
    for index in range(20):
        assert {(o.color, o.shape) for o in scene_for(0, index, "heldout-combos").objects} & HELD_OUT_COMBOS
        assert scene_for(0, index, "long").duration >= LONG_DURATIONS[0] > TRAIN_DURATIONS[1]
    # stills (stage 0, the image world) show the training pairs, or with every_pair the held-out ones too
    stills = {(o.color, o.shape) for index in range(200) for o in scene_for(0, index, video=False).objects}
    assert not stills & HELD_OUT_COMBOS
    every = {(o.color, o.shape) for i in range(200) for o in scene_for(0, i, video=False, every_pair=True).objects}
    assert HELD_OUT_COMBOS <= every


def test_written_split_reads_back_through_the_video_path(tmp_path, capsys):
    assert main(["data", "shapes", str(tmp_path), "--split", "test", "--count", "3", "--seed", "5"]) == 0
    assert main(["data", "shapes", str(tmp_path), "--images", "--count", "2"]) == 0
    samples = load_samples(tmp_path / "test.json")
    assert len(samples) == 3 and samples[0].messages[0]["content"].startswith("<video>\n")
    assert main(["data", "check", str(tmp_path / "test.json"), "--video-root", str(tmp_path / "videos")]) == 0
    assert main(["data", "check", str(tmp_path / "images.json"), "--video-root", str(tmp_path / "images")]) == 0
    rows = json.loads((tmp_path / "test_qa.json").read_text())
    assert {r["type"] for r in rows} >= {"attribute", "counting", "motion", "caption"}
    scene = scene_for(5, 0, "test")
    clip = read_video(tmp_path / "videos" / "test_00000.mp4", UniformSampler(scene.num_frames))
    assert clip.num_source_frames == scene.num_frames and clip.fps == pytest.approx(FPS)
    rendered = np.stack(list(scene.frames()))
    assert np.abs(clip.frames.astype(int) - rendered).mean() < 3  # H.264 at crf 18: close to the rendering


def test_every_pair_stills_from_the_cli(tmp_path, capsys):
    """`--every-pair` writes the stills scene_for draws with every_pair; on clips it is a one-line error."""
    assert main(["data", "shapes", str(tmp_path), "--images", "--every-pair", "--count", "40", "--canvas", "32"]) == 0
    answers = [
        turn["value"]
        for row in json.loads((tmp_path / "images.json").read_text())[:40:13]
        for turn in row["conversations"]
        if turn["from"] == "gpt"
    ]
    expected = [
        qa["answer"]
        for i in range(0, 40, 13)
        for qa in scene_for(0, i, video=False, canvas=32, every_pair=True).questions
    ]
    assert answers == expected
    capsys.readouterr()
    assert main(["data", "shapes", str(tmp_path), "--every-pair", "--count", "1"]) != 0
    assert "--every-pair is for stills" in capsys.readouterr().err


def test_still_regions_box_their_objects(tmp_path):
    """Each still's rows carry its objects' region descriptions (Visual Genome's x, y, width, height, phrase): the
    box holds every pixel of that object's colour, and its edges touch them."""
    write_split(tmp_path, "train", 12, seed=0, video=False, every_pair=True)
    rows = json.loads((tmp_path / "images.json").read_text())
    assert sum(len(row["regions"]) for row in rows) > len(rows)  # some stills hold several objects
    for index, row in enumerate(rows):
        scene = scene_for(0, index, video=False, every_pair=True)
        frame = scene.render()
        assert [r["phrase"] for r in row["regions"]] == [f"a {o.name}" for o in scene.objects]
        for region, obj in zip(row["regions"], scene.objects):
            ys, xs = np.nonzero(color_mask(frame, obj.rgb))
            x0, y0 = region["x"], region["y"]
            x1, y1 = x0 + region["width"], y0 + region["height"]
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1, (row["image"], region)
            if obj.shape in ("square", "circle"):  # shapes that reach every side of their box (unless occluded)
                assert min(xs.min() - x0, x1 - 1 - xs.max(), ys.min() - y0, y1 - 1 - ys.max()) <= 1
    stills = ["data", "shapes", "--images", "--every-pair", "--count", "12"]
    assert main([*stills, str(tmp_path / "named")]) == 0
    assert main([*stills, str(tmp_path / "apart"), "--region-naming", "color", "shape"]) == 0
    named, apart = (json.loads((tmp_path / f"{d}/images.json").read_text()) for d in ("named", "apart"))
    assert named == rows
    for index, row in enumerate(apart):
        objects = scene_for(0, index, video=False, every_pair=True).objects
        phrases = [phrase for o in objects for phrase in (f"a {o.color} object", f"a {o.shape}")]
        assert [r["phrase"] for r in row["regions"]] == phrases


def test_captions_read_as_sentences():
    still = next(scene_for(99, i, video=False) for i in range(50) if len(scene_for(99, i, video=False).objects) == 2)
    a, b = (f"{o.color} {o.shape} {o.place(still.canvas)}" for o in still.objects)
    assert still.caption().lower().startswith(f"a {a} and a {b} on a ")
    corner = ShapeObject("circle", "red", (230, 30, 30), 50, (0.0, 170.0))
    assert corner.place(224) == "at the bottom left"
    clip = next(scene_for(0, i) for i in range(50) if len(scene_for(0, i).objects) == 2)
    assert " while a " in clip.caption() and clip.caption().endswith(".")


def test_shapes_probe_reads_colour_and_shape_off_the_bundled_tower():
    """scripts/shapes_probe.py on the bundle's tower: probes fitted on seen pairs read colour and shape off a lone
    still's features and off each object's own patches (one row per tower and reading, each cell a percentage)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tower = root / "vllm_i2v/bundled/shapes-smollm2/tower"
    script = [sys.executable, str(root / "scripts/shapes_probe.py"), "--tower", str(tower), "--stills", "240"]
    result = subprocess.run(script, capture_output=True, text=True, timeout=300, check=True)
    header, _, *rows = result.stdout.strip().splitlines()
    names = [name.strip() for name in header.strip("|").split("|")[2:]]
    assert names[:4] == [f"{a}, {b} pairs" for a in ("colour", "shape") for b in ("seen", "held-out")]
    readings = {}
    for row in rows:
        _, reading, *cells = (cell.strip() for cell in row.strip("|").split("|"))
        readings[reading] = dict(zip(names, map(float, cells)))
    assert set(readings) == {"whole still", "each object"}
    for cells in readings.values():
        assert cells["colour, seen pairs"] >= 90 and cells["shape, seen pairs"] >= 80
        assert all(0 <= value <= 100 for value in cells.values())


def test_files_drawn_otherwise_are_an_error_not_kept(tmp_path, capsys):
    """Kept files must show the scenes their captions describe: stills drawn without --every-pair (or clips of
    another canvas) are not reused under new captions, and nothing already written changes."""
    stills = ["data", "shapes", str(tmp_path), "--images", "--count", "3", "--canvas", "32"]
    assert main(stills) == 0
    before = (tmp_path / "images.json").read_text()
    capsys.readouterr()
    assert main([*stills, "--every-pair"]) != 0
    assert "images_scenes.json" in capsys.readouterr().err
    assert (tmp_path / "images.json").read_text() == before
    assert main(["data", "shapes", str(tmp_path), "--images", "--count", "5", "--canvas", "32"]) == 0  # resumes
    clips = ["data", "shapes", str(tmp_path), "--split", "test", "--count", "1", "--canvas", "32"]
    assert main(clips) == 0
    assert main([*clips[:-1], "48"]) != 0
    (tmp_path / "images_scenes.json").unlink()  # as a folder written before the record existed
    capsys.readouterr()
    assert main(stills) != 0
    assert "images_00000.png: written with no images_scenes.json" in capsys.readouterr().err
