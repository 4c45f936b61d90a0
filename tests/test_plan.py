"""`vllm-i2v plan`: exact token arithmetic for every projector and frame count, memory predicted within ±20% of a
real training run's peak, no weight read, training refused (with the cheapest change) when it cannot fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import PROJECTOR_SPECS
from tiny import random_frames

from vllm_i2v.cli import main
from vllm_i2v.plan import Setup, estimate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(build, tmp_path_factory):
    """A saved tiny checkpoint per projector."""
    root = tmp_path_factory.mktemp("plan-models")
    paths = {}
    for name in PROJECTOR_SPECS:
        model, processor = build(name)
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
        paths[name] = root / name
    return paths


@pytest.mark.parametrize("projector", sorted(PROJECTOR_SPECS))
def test_visual_tokens_are_what_the_processor_makes(saved, projector):
    from vllm_i2v.models import VideoLLMProcessor

    processor = VideoLLMProcessor.from_pretrained(saved[projector])
    for frames in (1, 2, 5, 8):
        planned = estimate(saved[projector], Setup(frames=frames, batch=1, text_tokens=16)).tokens
        batch = processor([[{"role": "user", "content": "<video>\nWhat?"}]], [[random_frames(frames)]])
        slots = int(np.isin(batch["input_ids"][0], [processor.config.video_token_id]).sum())
        assert planned["per video"] == slots, (projector, frames)
    assert planned["per frame"] == processor.config.num_visual_tokens(1)


def test_nothing_is_read_but_configs(saved, tmp_path):
    """A checkpoint whose weights are zeroed out (headers kept, only they are checked) plans the same: no weight is
    read."""
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(saved["stpool"], copy)
    weights = copy / "model.safetensors"
    header = weights.read_bytes()[: 8 + int.from_bytes(weights.read_bytes()[:8], "little")]
    weights.write_bytes(header + b"\0" * (weights.stat().st_size - len(header)))  # same size, no values
    result = estimate(copy, Setup(frames=4, batch=2))
    assert result.parameters["LLM"]["total"] > 0 and result.training["total"] > 0


def peak_of_training(config: Path) -> float:
    """Peak resident memory (bytes) of a real `vllm-i2v train` process."""
    wrapper = (
        "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-m", "vllm_i2v.cli", "train", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1]) * 1024


@pytest.mark.parametrize("llm, frames, batch", [("lora", 4, 2), ("full", 8, 4)])
def test_predicted_memory_within_20_percent_of_a_real_run(saved, tmp_path, llm, frames, batch):
    from vllm_i2v.video.writer import write_video

    (tmp_path / "videos").mkdir()
    rows = []
    for i in range(8):
        write_video(tmp_path / "videos" / f"{i}.mp4", random_frames(8, 32, 32, seed=i), fps=4)
        rows.append(
            {
                "id": str(i),
                "video": f"{i}.mp4",
                "conversations": [
                    {"from": "human", "value": "<video>\nWhat moves?"},
                    {"from": "gpt", "value": "A square moves."},
                ],
            }
        )
    (tmp_path / "train.json").write_text(json.dumps(rows))
    config = {
        "model": str(saved["adapool"]),
        "data": {"train": str(tmp_path / "train.json"), "video_root": str(tmp_path / "videos"), "num_frames": frames},
        "trainable": {"projector": True, "llm": llm},
        "training": {
            "output_dir": str(tmp_path / "out"),
            "max_steps": 3,
            "per_device_train_batch_size": batch,
            "save_strategy": "no",
            "dataloader_num_workers": 0,
        },
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    from vllm_i2v.plan import setup_from_training_config

    source, setup = setup_from_training_config(tmp_path / "train.yaml")
    predicted = estimate(source, setup).training["total"]
    measured = peak_of_training(tmp_path / "train.yaml")
    assert 0.8 <= predicted / measured <= 1.2, (predicted / 2**20, measured / 2**20)


def test_plan_command_and_training_refused_when_it_cannot_fit(saved, tmp_path, capsys):
    assert main(["plan", str(saved["adapool"]), "--frames", "8", "--batch", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"]["per video"] == 8 and result["fits"]["training"] is True
    assert result["largest"]["frames"] >= 8 and result["largest"]["batch"] >= 2
    assert main(["plan", str(saved["adapool"]), "--device-memory", "1MiB"]) == 0
    out = capsys.readouterr().out
    assert "fits in 1.0 MiB: NO" in out
    (tmp_path / "train.json").write_text("[]")
    config = {
        "model": str(saved["adapool"]),
        "data": {"train": str(tmp_path / "train.json")},
        "training": {"output_dir": str(tmp_path / "out")},
    }
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(config))
    import vllm_i2v.plan as plan_module

    real = plan_module.detected_memory
    plan_module.detected_memory = lambda: (2**20, "a tiny device")
    try:
        assert main(["train", str(tmp_path / "t.yaml")]) == 2
    finally:
        plan_module.detected_memory = real
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: this run needs ~") and "a tiny device has 1.0 MiB" in err and "--force" in err


def test_activations_grow_with_the_batch_and_leave_out_the_weights(saved):
    """What autograd keeps for the backward pass scales with the batch; the weights it keeps to pass gradients back
    through a frozen layer are the weights' own memory, counted once, under weights (float32: no autocast copies)."""
    one, four = (
        estimate(saved["stpool"], Setup(frames=4, batch=batch, llm="frozen", text_tokens=16, dtype="fp32")).training
        for batch in (1, 4)
    )
    assert one["activations: projector + LLM"] > 0
    assert four["activations: projector + LLM"] == pytest.approx(4 * one["activations: projector + LLM"], rel=0.05)


def test_zero3_counts_the_parameters_deepspeed_keeps_gathered(saved, tmp_path):
    """Under ZeRO-3 each device holds its share of the weights plus what DeepSpeed keeps gathered: with the shipped
    config (stage3_max_live_parameters and _reuse_distance 1e9) a small model is whole on every device during a
    step, so 2 devices hold 1.5 models' weights; a config that releases parameters at once holds about a share."""
    from vllm_i2v.plan import setup_from_training_config

    (tmp_path / "train.json").write_text("[]")
    ds = json.loads((ROOT / "configs" / "deepspeed" / "zero3.json").read_text())
    releasing = {**ds, "zero_optimization": {**ds["zero_optimization"], "stage3_max_reuse_distance": 0}}
    (tmp_path / "releasing.json").write_text(json.dumps(releasing))
    weights = {}
    for name, deepspeed in (("shipped", ROOT / "configs" / "deepspeed" / "zero3.json"), ("releasing", None)):
        config = {
            "model": str(saved["stpool"]),
            "data": {"train": str(tmp_path / "train.json")},
            "training": {
                "output_dir": str(tmp_path / "out"),
                "deepspeed": str(deepspeed or tmp_path / "releasing.json"),
            },
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        source, setup = setup_from_training_config(tmp_path / f"{name}.yaml")
        setup.gpus, setup.dtype = 2, "fp32"
        result = estimate(source, setup)
        weights[name] = result.training["weights"]
        total = sum(p["total"] for p in result.parameters.values())
    assert weights["shipped"] == pytest.approx(1.5 * 4 * total, rel=0.02)
    assert weights["releasing"] < 0.7 * 4 * total


def test_a_frozen_tower_needs_working_memory_for_its_frames(saved):
    """A frozen tower keeps nothing for the backward pass, yet its forward holds its layers' intermediates for all
    the frames at once; read from the feature cache, it does not run: only the features count."""
    vision = {
        (frames, cache): estimate(
            saved["stpool"],
            Setup(frames=frames, batch=1, llm="frozen", text_tokens=16, dtype="fp32", feature_cache=cache),
        ).training["activations: vision tower"]
        for frames, cache in ((8, False), (32, False), (32, True))
    }
    assert vision[(32, False)] > 2 * vision[(8, False)] > 0
    assert 0 < vision[(32, True)] < vision[(32, False)] / 4


def test_mixed_precision_counts_the_frozen_llm_as_training_stores_it(saved, tmp_path, monkeypatch):
    """Under bf16 the plan's weights are the bytes of the parameters `vllm-i2v train` holds (the frozen LLM's linear
    weights in 16 bits, LoRA added), and a step saves no autocast copies of those weights: float32 storage would
    add 2 bytes per weight to the activations."""
    from vllm_i2v.plan import setup_from_training_config
    from vllm_i2v.train.config import load_train_config, training_arguments
    from vllm_i2v.train.precision import llm_linear_layers
    from vllm_i2v.train.prepare import prepare_model

    (tmp_path / "train.json").write_text("[]")
    config = {
        "model": str(saved["stpool"]),
        "data": {"train": str(tmp_path / "train.json"), "num_frames": 4},
        "trainable": {"projector": True, "llm": "lora"},
        "training": {"output_dir": str(tmp_path / "out"), "bf16": True, "per_device_train_batch_size": 1},
    }
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(config))
    source, setup = setup_from_training_config(tmp_path / "t.yaml")
    setup.text_tokens = 16
    planned = estimate(source, setup).training
    train_config = load_train_config(tmp_path / "t.yaml")
    model, _, _ = prepare_model(train_config, training_arguments(train_config))
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    linear = sum(layer.weight.numel() for layer in llm_linear_layers(model.language_model))
    assert {layer.weight.dtype for layer in llm_linear_layers(model.language_model)} == {torch.bfloat16}
    assert planned["weights"] == held

    monkeypatch.setattr(Setup, "frozen_llm_dtype", property(lambda self: None))  # float32 storage
    float32 = estimate(source, setup).training
    assert float32["weights"] == held + 2 * linear
    added = float32["activations: projector + LLM"] - planned["activations: projector + LLM"]
    assert added == pytest.approx(2 * linear, rel=0.05)
