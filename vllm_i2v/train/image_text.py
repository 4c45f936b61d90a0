"""Stage 0: image-text contrastive pretraining of a vision tower against a frozen sentence encoder (LiT-style).

``vllm-i2v pretrain-tower CONFIG.yaml`` trains a transformers vision tower (built from ``random_init`` or loaded
from a folder) on captioned images in the LLaVA layout: each image's caption (its first answer) is embedded
once by a frozen sentence encoder (mean pooling, as sentence-transformers models are trained), and the tower's
mean-pooled patch features, through a linear head, are pulled toward their own caption and away from the
batch's others (CLIP's symmetric loss, learned temperature). Pooling the *patch* tokens, not a CLS token, trains
the features a projector later reads. transformers' Trainer runs it (bf16 autocast, schedule, progress bar);
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


class ContrastiveTower(nn.Module):
    """A vision tower + a linear head into a frozen text embedding space, with CLIP's symmetric loss."""

    def __init__(self, vision: nn.Module, text_dim: int, prefix_tokens: int):
        super().__init__()
        self.vision = vision
        self.prefix_tokens = prefix_tokens  # CLS, registers: before the patches, left out of the mean
        self.head = nn.Linear(vision.config.hidden_size, text_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.vision(pixel_values=pixel_values).last_hidden_state[:, self.prefix_tokens :]
        return F.normalize(self.head(patches.mean(1)), dim=-1)

    def forward(self, pixel_values: torch.Tensor, text_embeds: torch.Tensor, caption_ids: torch.Tensor):
        image = self.image_embeddings(pixel_values)
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * image @ text_embeds.float().T
        # images whose captions are identical are all right answers: a soft target spread over them
        same = (caption_ids[:, None] == caption_ids[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = (
            torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
            + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean()
        ) / 2
        return {"loss": loss, "logits": logits}


class CaptionedImages(torch.utils.data.Dataset):
    """(image, caption embedding) pairs of a LLaVA-layout file: each image's first answer is its caption, or, with
    ``questions``, the answers to those questions are its captions (each one pair). ``preload``: every file decoded
    and preprocessed once, here, and its pixels kept (``ImageDataConfig.preload``)."""

    def __init__(
        self,
        path: str,
        image_root: str,
        preprocess: PreprocessSpec,
        encoder: str,
        questions: list[str] | None = None,
        preload: bool = False,
    ):
        samples = [s for s in load_samples(path) if s.image]
        if not samples:
            raise ConfigError(f"{path}: no image rows")
        self.paths, captions = [], []
        for sample in samples:
            file = resolve_inside(Path(image_root), sample.image, sample.source)
            for caption in _captions(sample.messages, questions):
                self.paths.append(file)
                captions.append(caption)
        if not captions:
            raise ConfigError(f"{path}: no row answers any of the caption questions {questions}")
        unique = sorted(set(captions))
        index = {caption: i for i, caption in enumerate(unique)}
        self.caption_ids = [index[c] for c in captions]
        self.embeddings = sentence_embeddings(unique, encoder, desc="embedding captions")
        self.preprocess = FramePreprocessor(preprocess)
        self.pixels = None
        if preload:  # each distinct file once (with caption_questions, a file is several pairs)
            distinct = dict.fromkeys(self.paths)
            pixels = {file: self._pixels(file) for file in tqdm(distinct, desc="decoding images", unit="image")}
            self.pixels = [pixels[file] for file in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def _pixels(self, file: Path) -> torch.Tensor:
        with Image.open(file) as image:  # closed at once: a preload opens every file in turn
            return self.preprocess(np.asarray(image.convert("RGB"))[None])[0]

    def __getitem__(self, i: int) -> dict:
        caption = self.caption_ids[i]
        return {
            "pixel_values": self.pixels[i] if self.pixels is not None else self._pixels(self.paths[i]),
            "text_embeds": self.embeddings[caption],
            "caption_ids": torch.tensor(caption),
        }


def pretrain_tower(config_path: str, overrides: list[str] = ()) -> Path:
    """Run stage 0 as ``config_path`` says; returns the saved tower's folder (``OUTPUT_DIR/tower``)."""
    config = load_pretrain_config(config_path, overrides)
    set_seed(config.seed)
    vision, preprocess = vision_part(config.vision)
    data = config.data
    dataset = CaptionedImages(
        data.train, data.image_root, preprocess, config.text_encoder, data.caption_questions, data.preload
    )
    model = ContrastiveTower(vision, dataset.embeddings.shape[1], feature_geometry(vision, preprocess)[1])
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
