"""Chat: answers with the KV cache kept across turns equal fresh answers; the CLI, scripted and interactive."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from tiny import random_frames

from vllm_i2v.chat import ChatSession
from vllm_i2v.cli import main
from vllm_i2v.models import VideoLLMProcessor
from vllm_i2v.models.checkpoint import load_model
from vllm_i2v.video import UniformSampler, read_video
from vllm_i2v.video.writer import write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("chat") / "clip.mp4", random_frames(12, 40, 40), fps=4)


def fresh_answer(model, processor, messages, clip_path, frames) -> list[int]:
    """Greedy answer computed from scratch over the whole conversation (no cache carried over)."""
    pixels = processor.frame_preprocessor(read_video(clip_path, UniformSampler(frames)).frames)
    ids, _ = processor.expanded_ids(messages, [frames])
    out = model.generate(
        input_ids=torch.tensor([ids]), pixel_values=pixels, frame_counts=[frames], max_new_tokens=10, do_sample=False
    )
    return out[0].tolist()


def test_later_turns_reuse_the_cache_and_match_fresh_answers(saved_model, clip):
    model, processor = load_model(saved_model), VideoLLMProcessor.from_pretrained(saved_model)
    session = ChatSession(model, processor, num_frames=4, max_new_tokens=10)
    session.set_video(clip)
    for turn, question in enumerate(("What moves?", "Which way does it move?", "How many objects are there?")):
        messages = session.messages + [
            {"role": "user", "content": ("<video>\n" if not session.messages else "") + question}
        ]
        answer, times = session.ask(question)
        expected = processor.tokenizer.decode(
            fresh_answer(model, processor, messages, clip, 4), skip_special_tokens=True
        )
        assert answer == expected.strip()
        ids, _ = processor.expanded_ids(messages, [4])
        after_video = max(i for i, t in enumerate(ids) if t == model.config.video_token_id) + 1
        if turn == 0:
            assert times.prefill_tokens == len(ids)
        else:  # the video (and all before it) comes from the cache: never prefilled again
            assert times.prefill_tokens <= len(ids) - after_video


def test_independent_turns_answer_each_question_about_the_video_alone(saved_model, clip):
    model, processor = load_model(saved_model), VideoLLMProcessor.from_pretrained(saved_model)
    assert ChatSession(model, processor).independent_turns is False  # the saved model was not trained so
    model.config.independent_turns = True  # as training with data.independent_turns saves it
    session = ChatSession(model, processor, num_frames=4, max_new_tokens=10, system="Answer briefly.")
    session.set_video(clip)
    session.ask("What moves?")
    answer, times = session.ask("Which way does it move?")
    alone = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "<video>\nWhich way does it move?"},
    ]
    expected = processor.tokenizer.decode(fresh_answer(model, processor, alone, clip, 4), skip_special_tokens=True)
    assert answer == expected.strip()
    ids, _ = processor.expanded_ids(alone, [4], add_generation_prompt=True)
    after_video = max(i for i, t in enumerate(ids) if t == model.config.video_token_id) + 1
    assert times.prefill_tokens <= len(ids) - after_video  # the video came from the cache
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]


def test_cancel_stops_an_answer_and_the_session_goes_on(saved_model, clip):
    model, processor = load_model(saved_model), VideoLLMProcessor.from_pretrained(saved_model)
    session = ChatSession(
        model, processor, num_frames=2, max_new_tokens=40, generation={"do_sample": False, "min_new_tokens": 40}
    )
    session.set_video(clip)
    _, times = session.ask("Describe the clip in detail.", on_text=lambda piece: session.cancel.set())
    assert times.new_tokens < 40
    answer, _ = session.ask("What moves?")
    assert len(session.messages) == 4 and isinstance(answer, str)


def test_scripted_json(saved_model, clip, capsys):
    argv = [
        "chat",
        "--model",
        str(saved_model),
        "--video",
        str(clip),
        "--frames",
        "2",
        "--max-new-tokens",
        "5",
        "--question",
        "What moves?",
        "--question",
        "Which way?",
        "--json",
        "--turns",
        "independent",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["video"] == str(clip) and [t["question"] for t in result["turns"]] == ["What moves?", "Which way?"]


def test_interactive_session_survives_bad_input(saved_model, clip, tmp_path):
    transcript = tmp_path / "t.json"
    commands = f"/frames 2\n/video {tmp_path}/missing.mp4\nWhat moves?\n/save {transcript}\n/bogus\n/reset\nAgain?\n"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vllm_i2v.cli",
            "chat",
            "--model",
            str(saved_model),
            "--video",
            str(clip),
            "--max-new-tokens",
            "5",
        ],
        input=commands,
        capture_output=True,
        text=True,
        timeout=120,
        env={"XDG_STATE_HOME": str(tmp_path), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr[-2000:]  # end of input exits 0
    assert (
        "missing.mp4: no such file or directory" in result.stdout
        and "unknown or incomplete command '/bogus'" in result.stdout
    )
    saved = json.loads(transcript.read_text())
    assert saved["num_frames"] == 2 and saved["messages"][0]["content"] == "<video>\nWhat moves?"


def test_model_that_is_not_a_checkpoint(tmp_path, capsys):
    assert main(["chat", "--model", str(tmp_path), "--question", "hi"]) == 2
    assert "not a VideoLLM checkpoint (no config.json)" in capsys.readouterr().err
