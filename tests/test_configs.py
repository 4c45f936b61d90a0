"""Every shipped file a user points a command at loads through the schema that checks it, and the YAML configs
document each knob as that schema says; the code is formatted and linted as pyproject.toml configures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_i2v.eval.judges import JudgePrompt
from vllm_i2v.eval.tasks import load_task
from vllm_i2v.models.spec import load_build_spec
from vllm_i2v.train.config import load_train_config, training_arguments
from vllm_i2v.train.image_text import load_pretrain_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "configs" / "model").glob("*.yaml")) + [ROOT / "configs/shapes/model.yaml"],
    ids=lambda p: p.name,
)
def test_model_specs(path):
    spec = load_build_spec(path)
    assert spec["vision"] and spec["llm"] and spec["projector"]["type"]


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "configs" / "train").glob("*.yaml")) + [ROOT / "configs/shapes/video.yaml"],
    ids=lambda p: p.name,
)
def test_training_configs(path, tmp_path):
    config = load_train_config(path, check_files=False)
    deepspeed = config.training.pop("deepspeed", None)
    assert deepspeed is None or (ROOT / deepspeed).is_file()
    assert config.describe_trainable() != "nothing"
    config.training["output_dir"] = str(tmp_path)
    training_arguments(config)  # transformers accepts it as it is


def test_pretraining_config():
    config = load_pretrain_config(ROOT / "configs/shapes/tower.yaml")
    assert config.vision["random_init"]["model_type"] == "clip_vision_model"


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "deepspeed").glob("*.json")), ids=lambda p: p.name)
def test_deepspeed_configs(path):
    config = json.loads(path.read_text())
    assert config["zero_optimization"]["stage"] in (2, 3)
    assert config["train_micro_batch_size_per_gpu"] == "auto"  # the Trainer fills it


@pytest.mark.parametrize("path", sorted((ROOT / "eval" / "tasks").glob("*.yaml")), ids=lambda p: p.name)
def test_eval_task_files(path):
    task = load_task(str(path))
    for prompt in [task.judge_prompt, *task.judge_prompts]:
        if prompt:
            assert (ROOT / "eval" / "prompts" / f"{prompt}.yaml").is_file()


@pytest.mark.parametrize("path", sorted((ROOT / "eval" / "prompts").glob("*.yaml")), ids=lambda p: p.name)
def test_judge_prompts(path):
    prompt = JudgePrompt.load(str(path))
    assert prompt.version == path.stem


def test_shipped_yaml_documents_every_knob():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/document_configs.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr + "\n(run: python scripts/document_configs.py)"


def test_code_is_formatted_and_linted():
    for command in (["ruff", "format", "--check", "."], ["ruff", "check", "."]):
        done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
