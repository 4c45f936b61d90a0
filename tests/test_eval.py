"""Evaluation: answer normalization, batched resumable prediction, the shapes-world benchmark's scoring."""

from __future__ import annotations

import json

import pytest
from tiny import random_frames

from vllm_i2v.eval import exact_match, normalize_answer, predict
from vllm_i2v.eval.shapes import benchmark_rows, column_of, score
from vllm_i2v.models import VideoLLMProcessor
from vllm_i2v.models.checkpoint import load_model
from vllm_i2v.video.writer import write_video


@pytest.mark.parametrize(
    "prediction, reference, same",
    [
        ("The red square.", "the red square", True),
        ("Two", "2", True),
        ("  LEFT!", "left", True),
        ("an apple", "apple", True),
        ("left", "right", False),
        ("the red square", "the red star", False),
    ],
)
def test_exact_match_after_normalization(prediction, reference, same):
    assert exact_match(prediction, reference) is same


def test_normalize_answer():
    assert normalize_answer("It's THREE objects, the end.") == "it s 3 objects end"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    for i in range(3):
        write_video(root / f"v{i}.mp4", random_frames(6, 32, 32, seed=i), fps=4)
    return root


def rows(n: int) -> list[dict]:
    return [
        {
            "question_id": f"q{i}",
            "video": f"v{i % 3}.mp4",
            "question": "What is it?" + " really" * (i % 4),
            "answer": "red",
            "column": "attribute",
        }
        for i in range(n)
    ]


def test_batched_predictions_equal_one_by_one_and_resume(saved_model, videos, tmp_path):
    model, processor = load_model(saved_model), VideoLLMProcessor.from_pretrained(saved_model)
    batched = tmp_path / "batched.jsonl"
    stats = predict(model, processor, rows(7), videos, batched, batch_size=4, max_new_tokens=5)
    assert stats["predicted"] == 7 and stats["missing"] == 0
    single = tmp_path / "single.jsonl"
    predict(model, processor, rows(7), videos, single, batch_size=1, max_new_tokens=5)
    by_id = lambda path: {r["question_id"]: r["pred"] for r in map(json.loads, path.read_text().splitlines())}  # noqa: E731
    assert by_id(batched) == by_id(single)  # left padding changes nothing
    # a crash mid-write leaves a cut line; the rerun keeps the finished rows and redoes the rest
    lines = batched.read_text().splitlines()
    batched.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    again = predict(model, processor, rows(7), videos, batched, batch_size=4, max_new_tokens=5)
    assert again["skipped"] == 3 and again["predicted"] == 4
    assert by_id(batched) == by_id(single)


def test_missing_videos_are_counted_and_the_run_goes_on(saved_model, videos, tmp_path):
    model, processor = load_model(saved_model), VideoLLMProcessor.from_pretrained(saved_model)
    todo = rows(3) + [
        {"question_id": "lost", "video": "nope.mp4", "question": "?", "answer": "x", "column": "attribute"}
    ]
    stats = predict(model, processor, todo, videos, tmp_path / "p.jsonl", batch_size=2, max_new_tokens=2)
    assert stats["predicted"] == 3 and stats["missing"] == 1 and "nope.mp4" in stats["missing_videos"][0]


def test_feature_cache_gives_the_same_answers(saved_model, videos, tmp_path):
    model, processor = load_model(saved_model), VideoLLMProcessor.from_pretrained(saved_model)
    for run in ("a", "b"):  # a fills the cache, b reads it
        predict(
            model, processor, rows(4), videos, tmp_path / f"{run}.jsonl", max_new_tokens=4, feature_cache=tmp_path / "f"
        )
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert len(list((tmp_path / "f").rglob("*.safetensors"))) == 3


def test_shapes_benchmark_columns_and_scores(tmp_path):
    qa = [
        {"id": "a", "video": "x.mp4", "type": "attribute", "question": "What color is the square?", "answer": "red"},
        {
            "id": "b",
            "video": "x.mp4",
            "type": "attribute",
            "question": "What shape is the red object?",
            "answer": "square",
        },
        {
            "id": "c",
            "video": "x.mp4",
            "type": "motion",
            "subtype": "direction",
            "question": "Which direction does the red square move?",
            "answer": "left",
        },
        {
            "id": "d",
            "video": "x.mp4",
            "type": "motion",
            "subtype": "moving-or-still",
            "question": "Is the red square moving or still?",
            "answer": "moving",
        },
        {"id": "e", "video": "x.mp4", "type": "caption", "question": "Describe the video.", "answer": "A red square."},
    ]
    (tmp_path / "test_qa.json").write_text(json.dumps(qa))
    chosen = benchmark_rows(tmp_path / "test_qa.json", per_column=1)
    assert [r["question_id"] for r in chosen] == ["a", "c", "d"]  # one per column; captions are not scored
    assert column_of(qa[2]) == "direction" and column_of(qa[4]) is None
    preds = [{**r, "pred": p} for r, p in zip(chosen, ["Red.", "right", "moving"])]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    scores = score(tmp_path / "p.jsonl")
    assert scores["attribute"] == {"accuracy": 100.0, "n": 1} and scores["direction"]["accuracy"] == 0.0
    assert scores["counting"] == {"accuracy": None, "n": 0}
