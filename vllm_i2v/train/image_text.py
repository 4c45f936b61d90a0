"""Stage 0: image-text contrastive pretraining of a vision tower against a frozen sentence encoder (LiT-style).

``vllm-i2v pretrain-tower CONFIG.yaml`` trains a transformers vision tower (built from ``random_init`` or loaded
from a folder) on captioned images in the LLaVA layout: each image's caption (its first answer) is embedded
once by a frozen sentence encoder (mean pooling, as sentence-transformers models are trained), and the tower's
mean-pooled patch features, through a linear head, are pulled toward their own caption and away from the
batch's others (CLIP's symmetric loss, learned temperature). Pooling the *patch* tokens, not a CLS token, trains
the features a projector later reads. With ``region_weight``, rows' region descriptions (Visual Genome's layout:
``"regions": [{"x", "y", "width", "height", "phrase"}]``, pixels) add the same loss on each region: the patch
features inside its box, pooled, pulled toward its phrase, so that the patches an object covers say what it is,
not only the image as a whole. transformers' Trainer runs it (bf16 autocast, schedule, progress bar);
the result, ``OUTPUT_DIR/tower``, is an ordinary vision checkpoint with its ``preprocessor_config.json``, usable
as ``vision: OUTPUT_DIR/tower`` in any build spec.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from ..atomic import atomic_path, respect_umask, write_text_atomic
from ..data import load_samples
from ..data.formats import resolve_inside
from ..errors import ConfigError
from ..models.builder import vision_part
from ..models.preprocess import (
    FramePreprocessor,
    PreprocessSpec,
    image_processor_config,
)
from ..models.sentence_encoder import DEFAULT_SENTENCE_ENCODER, sentence_embeddings
from ..models.spec import load_yaml
from ..models.vision import feature_geometry
from ..schema import Problems, knob, read
from .config import TRAINING_DEFAULTS, check_training, shown_defaults
from .trainer import MetricsProgressCallback

# TrainingArguments stage 0 sets unless its config does: training's own, and a checkpoint every 100 steps (an
# interrupted run resumes from it)
PRETRAINING_DEFAULTS = {
    key: TRAINING_DEFAULTS[key]
    for key in ("report_to", "disable_tqdm", "dataloader_pin_memory", "use_cpu", "weight_decay", "logging_steps")
} | {"remove_unused_columns": False, "save_strategy": "steps", "save_steps": 100, "save_total_limit": 1}


@dataclass
class ImageDataConfig:
    train: str = knob("", "captioned images, LLaVA layout (each image's first answer is its caption)")
    image_root: str = knob("", "folder the image paths are relative to (and must stay inside)")
    caption_questions: list | None = knob(
        None, "the questions whose answers are an image's captions, each one training pair (default: its first answer)"
    )
    preload: bool = knob(
        False,
        "decode and preprocess every image once, before training, and keep the pixels in memory (float32: 12,000 "
        "images at 112x112 take 1.8 GB) instead of decoding each in every epoch",
    )


@dataclass
class PretrainConfig:
    """``vllm-i2v pretrain-tower``'s config (``configs/shapes/tower.yaml``)."""

    vision: str | dict = knob(
        "", "the tower: a folder, hub id or package:// path, or {random_init: {...}, preprocess: {...}}"
    )
    text_encoder: str = knob(DEFAULT_SENTENCE_ENCODER, "the frozen sentence encoder the captions are embedded by")
    data: ImageDataConfig = knob(factory=ImageDataConfig, doc="the captioned images")
    region_weight: float = knob(
        0.0,
        "weight of the region loss: each region of a row's `regions` (Visual Genome's x, y, width, height, phrase), "
        "its patch features pooled inside its box, pulled toward its phrase (0: whole images only)",
    )
    seed: int = knob(0, "seed of the tower's initialization and the data order")
    training: dict = knob(
        factory=dict,
        doc="transformers TrainingArguments (output_dir required)",
        keys=lambda _: TrainingArguments,
        implied=shown_defaults(PRETRAINING_DEFAULTS),
    )


def _captions(messages: list[dict], questions: list[str] | None) -> list[str]:
    """The assistant answers that are captions: the first one, or those answering one of ``questions``."""
    answers = [
        (messages[i - 1]["content"] if i else "", m["content"])
        for i, m in enumerate(messages)
        if m["role"] == "assistant"
    ]
    if not questions:
        return [answers[0][1]] if answers else []
    return [answer for asked, answer in answers if asked.removeprefix("<image>").strip() in questions]


def load_pretrain_config(path, overrides: list[str] = ()) -> PretrainConfig:
    """Read and check a stage-0 config: every problem at once, before anything loads."""
    problems = Problems()
    config = read(PretrainConfig, load_yaml(path, overrides, "pretraining config"), "", problems)
    for key in ("vision", "data.train", "data.image_root"):
        if not (config.vision if key == "vision" else getattr(config.data, key.split(".")[1])):
            problems.add(key, "required")
    check_training(config.training, problems)
    problems.raise_if_any(path)
    return config


def clip_loss(embeddings: torch.Tensor, text_embeds: torch.Tensor, caption_ids: torch.Tensor, scale) -> torch.Tensor:
    """CLIP's symmetric loss between normalized ``embeddings`` and their texts' ``text_embeds``; rows whose
    ``caption_ids`` are equal are all right answers (a soft target spread over them)."""
    logits = scale * embeddings @ text_embeds.float().T
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return (
        torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
        + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean()
    ) / 2


class ContrastiveTower(nn.Module):
    """A vision tower + a linear head into a frozen text embedding space, with CLIP's symmetric loss on whole
    images and, weighted by ``region_weight``, on regions (patch features pooled by per-patch weights)."""

    def __init__(self, vision: nn.Module, text_dim: int, prefix_tokens: int, region_weight: float = 0.0):
        super().__init__()
        self.vision = vision
        self.prefix_tokens = prefix_tokens  # CLS, registers: before the patches, left out of the mean
        self.head = nn.Linear(vision.config.hidden_size, text_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.region_weight = region_weight

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(pooled), dim=-1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        text_embeds: torch.Tensor,
        caption_ids: torch.Tensor,
        region_weights: torch.Tensor | None = None,
        region_embeds: torch.Tensor | None = None,
        region_ids: torch.Tensor | None = None,
    ):
        """``region_weights`` (B, R, patches): each region's pooling weights; ``region_ids`` (B, R) its phrase's
        id, -1 for padding; ``region_embeds`` (B, R, text_dim) its phrase's embedding."""
        patches = self.vision(pixel_values=pixel_values).last_hidden_state[:, self.prefix_tokens :]
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        loss = clip_loss(self.embed(patches.mean(1)), text_embeds, caption_ids, scale)
        # padding is -1; a batch whose rows list no regions adds nothing
        if self.region_weight and region_ids is not None and (valid := region_ids >= 0).any():
            regions = torch.einsum("brp,bpd->brd", region_weights.to(patches.dtype), patches)[valid]
            loss = loss + self.region_weight * clip_loss(
                self.embed(regions), region_embeds[valid], region_ids[valid], scale
            )
        return {"loss": loss}


def region_pooling(box: tuple[float, float, float, float], size: tuple[int, int], grid: tuple[int, int]):
    """(grid_h * grid_w,) weights that average the patches under ``box`` (x0, y0, x1, y1, in pixels of a
    preprocessed frame of ``size`` (h, w)), each by the share of its cell the box covers; None when it covers none."""
    (height, width), (rows, cols) = size, grid
    x0, y0, x1, y1 = box
    cell_h, cell_w = height / rows, width / cols
    top, left = torch.arange(rows) * cell_h, torch.arange(cols) * cell_w
    cover_h = (torch.minimum(top + cell_h, torch.tensor(y1)) - torch.maximum(top, torch.tensor(y0))).clamp(min=0)
    cover_w = (torch.minimum(left + cell_w, torch.tensor(x1)) - torch.maximum(left, torch.tensor(x0))).clamp(min=0)
    weights = (cover_h[:, None] * cover_w[None, :]).flatten()
    return weights / weights.sum() if weights.sum() > 0 else None


def pool_region(region: dict, height: int, width: int, preprocess: FramePreprocessor, grid: tuple[int, int]):
    """:func:`region_pooling` of one region description (Visual Genome's x, y, width, height, in pixels of a
    ``height`` x ``width`` image) on the patch ``grid`` of that image as ``preprocess`` hands it to the tower."""
    box = (region["x"], region["y"], region["x"] + region["width"], region["y"] + region["height"])
    return region_pooling(preprocess.map_box(box, height, width), preprocess.output_size, grid)


class CaptionedImages(torch.utils.data.Dataset):
    """(image, caption embedding) pairs of a LLaVA-layout file: each image's first answer is its caption, or, with
    ``questions``, the answers to those questions are its captions (each one pair). ``preload``: every file decoded
    and preprocessed once, here, and its pixels kept (``ImageDataConfig.preload``). ``grid``: the tower's patch
    grid (rows, columns); given, each pair also carries its image's ``regions`` (:func:`region_pooling`)."""

    def __init__(
        self,
        path: str,
        image_root: str,
        preprocess: PreprocessSpec,
        encoder: str,
        questions: list[str] | None = None,
        preload: bool = False,
        grid: tuple[int, int] | None = None,
    ):
        samples = [s for s in load_samples(path) if s.image]
        if not samples:
            raise ConfigError(f"{path}: no image rows")
        self.preprocess = FramePreprocessor(preprocess)
        self.paths, captions, regions = [], [], []
        for sample in samples:
            file = resolve_inside(Path(image_root), sample.image, sample.source)
            boxes = self._regions(sample, file, grid) if grid else []
            for caption in _captions(sample.messages, questions):
                self.paths.append(file)
                captions.append(caption)
                regions.append(boxes)
        if not captions:
            raise ConfigError(f"{path}: no row answers any of the caption questions {questions}")
        if grid and not any(regions):
            raise ConfigError(f"{path}: region_weight is set, but no row has regions")
        unique = sorted(set(captions) | {phrase for boxes in regions for _, phrase in boxes})
        index = {caption: i for i, caption in enumerate(unique)}
        self.caption_ids = [index[c] for c in captions]
        self.embeddings = sentence_embeddings(unique, encoder, desc="embedding captions")
        self.regions = None
        if grid:  # padded to the most regions any image has: weights (R, patches), phrase ids (R,), -1 unused
            most = max(len(boxes) for boxes in regions)
            self.regions = []
            for boxes in regions:
                weights = torch.zeros(most, grid[0] * grid[1])
                ids = torch.full((most,), -1)
                for r, (pooling, phrase) in enumerate(boxes):
                    weights[r], ids[r] = pooling, index[phrase]
                self.regions.append((weights, ids))
        self.pixels = None
        if preload:  # each distinct file once (with caption_questions, a file is several pairs)
            distinct = dict.fromkeys(self.paths)
            pixels = {file: self._pixels(file) for file in tqdm(distinct, desc="decoding images", unit="image")}
            self.pixels = [pixels[file] for file in self.paths]

    def _regions(self, sample, file: Path, grid: tuple[int, int]) -> list[tuple[torch.Tensor, str]]:
        """(pooling weights, phrase) of each of a row's regions that covers a patch."""
        listed = sample.extra.get("regions") or []
        if not isinstance(listed, list) or not all(
            isinstance(r, dict) and {"x", "y", "width", "height", "phrase"} <= set(r) for r in listed
        ):
            raise ConfigError(f"{sample.source}: regions must be a list of {{x, y, width, height, phrase}}")
        if not listed:
            return []
        with Image.open(file) as image:  # the header only: the size the boxes are in
            width, height = image.size
        out = []
        for r in listed:
            pooling = pool_region(r, height, width, self.preprocess, grid)
            if pooling is not None:
                out.append((pooling, str(r["phrase"])))
        return out

    def __len__(self) -> int:
        return len(self.paths)

    def _pixels(self, file: Path) -> torch.Tensor:
        with Image.open(file) as image:  # closed at once: a preload opens every file in turn
            return self.preprocess(np.asarray(image.convert("RGB"))[None])[0]

    def __getitem__(self, i: int) -> dict:
        caption = self.caption_ids[i]
        item = {
            "pixel_values": self.pixels[i] if self.pixels is not None else self._pixels(self.paths[i]),
            "text_embeds": self.embeddings[caption],
            "caption_ids": torch.tensor(caption),
        }
        if self.regions is not None:
            weights, ids = self.regions[i]
            item |= {"region_weights": weights, "region_ids": ids, "region_embeds": self.embeddings[ids.clamp(min=0)]}
        return item


def pretrain_tower(config_path: str, overrides: list[str] = ()) -> Path:
    """Run stage 0 as ``config_path`` says; returns the saved tower's folder (``OUTPUT_DIR/tower``)."""
    config = load_pretrain_config(config_path, overrides)
    set_seed(config.seed)
    vision, preprocess = vision_part(config.vision)
    data = config.data
    grid, prefix_tokens = feature_geometry(vision, preprocess)
    dataset = CaptionedImages(
        data.train,
        data.image_root,
        preprocess,
        config.text_encoder,
        data.caption_questions,
        data.preload,
        grid if config.region_weight else None,
    )
    model = ContrastiveTower(vision, dataset.embeddings.shape[1], prefix_tokens, config.region_weight)
    args = TrainingArguments(**(PRETRAINING_DEFAULTS | config.training))
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(MetricsProgressCallback())
    output = Path(args.output_dir)
    resume = get_last_checkpoint(str(output)) if output.is_dir() else None  # an interrupted run goes on from there
    trainer.train(resume_from_checkpoint=resume)
    trainer.state.save_to_json(str(Path(args.output_dir) / "trainer_state.json"))  # the loss curve
    out = Path(args.output_dir) / "tower"
    with atomic_path(out) as tmp:
        vision.save_pretrained(tmp)
        respect_umask(tmp)
        write_text_atomic(
            Path(tmp) / "preprocessor_config.json", json.dumps(image_processor_config(preprocess), indent=2) + "\n"
        )
    return out
