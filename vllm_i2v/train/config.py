"""Training configs: one YAML file (``configs/train/*.yaml``) naming the model, the data, what trains, and
transformers' ``TrainingArguments``; ``key=value`` overrides on the command line.

The schema below is the one place each knob and its default is defined. :func:`load_train_config` checks the
whole config before anything loads — every key, type, choice and range, the ``training:`` section against
transformers' own ``TrainingArguments``, the ``lora:`` sections against peft's ``LoraConfig``, the files it names
and a writable output folder — and reports every problem at once, one line each.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import TrainingArguments

from ..models.lora import lora_config_class
from ..models.spec import load_yaml
from ..schema import Problems, knob, read, unknown_key

Mode = Literal["frozen", "lora", "full"]

# TrainingArguments this project sets unless the config does (transformers' own defaults otherwise)
TRAINING_DEFAULTS = {
    "remove_unused_columns": False,  # the model takes pixel_values and frame_counts
    "report_to": "none",
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 2,
    "activation_checkpointing_kwargs": {"use_reentrant": False},
    "disable_tqdm": False,  # else transformers' log level decides, and ours is "error"
    "dataloader_pin_memory": torch.cuda.is_available(),
    "use_cpu": not torch.cuda.is_available(),  # CPU ranks under the deepspeed launcher need it to see each other
    "train_sampling_strategy": "group_by_length",
    "dataloader_num_workers": min(4, (os.cpu_count() or 1) // 2),  # decoding workers, as the machine allows
    "weight_decay": 0.0,
}
# how the shipped configs document them: the machine-dependent ones in words
MACHINE_DEPENDENT = {
    "dataloader_pin_memory": "true with CUDA",
    "use_cpu": "true without CUDA",
    "dataloader_num_workers": "half the CPU cores, at most 4",
}


def shown_defaults(defaults: dict) -> dict:
    """``defaults`` as the shipped YAML files show them (machine-dependent values described, not evaluated)."""
    return {k: MACHINE_DEPENDENT.get(k, v) for k, v in defaults.items()}


# lower bounds (inclusive unless marked ">") of TrainingArguments values a typo can make nonsense of
TRAINING_BOUNDS = {
    "learning_rate": (">", 0),
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "num_train_epochs": (">", 0),
    "warmup_steps": 0,
    "weight_decay": 0,
    "logging_steps": (">", 0),
    "save_steps": (">", 0),
    "dataloader_num_workers": 0,
    "max_grad_norm": 0,
}


@dataclass
class DataConfig:
    train: str | list = knob(
        "", "the training dataset file (LLaVA, Video-ChatGPT or VideoChat2 layout, JSON or JSONL), or a list of them"
    )
    eval: str | None = knob(None, "an evaluation dataset file, evaluated by the Trainer's eval_strategy")
    video_root: str | None = knob(None, "folder every video path is relative to (and must stay inside)")
    image_root: str | None = knob(
        None, "folder every image path is relative to (and must stay inside); default: video_root"
    )
    format: Literal["auto", "llava", "vcg", "videochat2"] = knob("auto", "dataset layout; auto: found per row")
    num_frames: int = knob(8, "frames sampled per video", minimum=1)
    sampler: Literal["segments", "uniform", "fps"] = knob(
        "segments", "segments: TSN (a frame per segment); uniform; fps"
    )
    random_offset: bool = knob(True, "segments: a random frame in each segment (augmentation) instead of its middle")
    fps: float | None = knob(None, "frames per second, for sampler: fps", above=0)
    strict: bool = knob(False, "stop at the first bad row instead of skipping it")
    decode_timeout: float = knob(60.0, "seconds; a video whose decoder hangs longer is skipped and logged", above=0)
    independent_turns: bool = knob(
        False, "train each exchange of a multi-turn row as its own one-question conversation (sharing the prefix)"
    )

    @property
    def train_files(self) -> list[str]:
        """``train`` as a list of dataset files (empty when none is named)."""
        return self.train if isinstance(self.train, list) else [self.train] if self.train else []


@dataclass
class TrainableConfig:
    projector: bool = knob(True, "the temporal projector trains")
    llm: Mode = knob("frozen", "the LLM: frozen, lora (adapters on its linear layers) or full")
    vision: Mode = knob("frozen", "the vision tower: frozen, lora (up to the feature layer) or full")


@dataclass
class TrainConfig:
    model: str | None = knob(None, "a VideoLLM checkpoint (full, trainable-only or bundle) to start from")
    build: str | None = knob(None, "or a build spec (configs/model/*.yaml), built once into OUTPUT_DIR/base")
    data: DataConfig = knob(factory=DataConfig, doc="the data")
    trainable: TrainableConfig = knob(factory=TrainableConfig, doc="what trains")
    lora: dict = knob(
        doc="peft LoraConfig fields for the LLM's adapters",
        keys=lambda _: lora_config_class(),
        factory=lambda: {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"},
    )
    vision_lora: dict = knob(
        doc="peft LoraConfig fields for the vision tower's adapters",
        keys=lambda _: lora_config_class(),
        factory=lambda: {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0},
    )
    quantization: Literal["nf4", "int8"] | None = knob(None, "QLoRA: the frozen LLM quantized by bitsandbytes")
    projector_lr: float | None = knob(
        None, "the projector's own learning rate (default: training.learning_rate)", above=0
    )
    projector_changes: dict = knob(
        factory=dict,
        doc="settings of the starting checkpoint's projector changed before training, weight-free ones only "
        "(e.g. adapool's grid: [4, 7, 7]); the trained checkpoint keeps them",
    )
    feature_cache: str | None = knob(None, "folder: frozen-tower features extracted once, read every epoch")
    attention: Literal["sdpa", "eager"] | None = knob(
        None,
        "the LLM's attention kernel in training (null: the checkpoint's); eager: faster on CPU for short sequences",
    )
    save_full: bool = knob(False, "also write a standalone merged checkpoint to OUTPUT_DIR/final-merged")
    training: dict = knob(
        factory=dict,
        doc="transformers TrainingArguments (output_dir required)",
        keys=lambda _: TrainingArguments,
        implied=shown_defaults(TRAINING_DEFAULTS),
    )

    @property
    def llm_mode(self) -> str:
        """How the LLM trains: frozen, lora, qlora (LoRA on the quantized LLM) or full."""
        return "qlora" if self.quantization else self.trainable.llm

    def describe_trainable(self) -> str:
        parts = ["projector"] if self.trainable.projector else []
        for part in ("llm", "vision"):
            mode = getattr(self.trainable, part)
            if mode == "lora":
                settings = self.lora if part == "llm" else self.vision_lora
                parts.append(f"{part.upper()} LoRA r={settings.get('r', 8)}")
            elif mode == "full":
                parts.append(f"{part.upper()} (full)")
        return " + ".join(parts) or "nothing"


def load_train_config(path, overrides: list[str] = (), check_files: bool = True) -> TrainConfig:
    """Read and check a training config; every problem is reported at once in one :class:`ConfigError`.

    ``check_files`` also checks that the files and folders it names exist and that the output folder can be
    written (off for reading a config on another machine)."""
    values = load_yaml(path, overrides, "training config")
    problems = Problems()
    config = read(TrainConfig, values, "", problems)
    if bool(config.model) == bool(config.build):
        problems.add("model/build", "name exactly one of model (a checkpoint) or build (a build spec)")
    if not config.data.train:
        problems.add("data.train", "a dataset file is required")
    elif isinstance(config.data.train, list) and not all(isinstance(f, str) and f for f in config.data.train):
        problems.add("data.train", f"a list of dataset files must hold file names only, got {config.data.train}")
    if config.quantization and config.trainable.llm != "lora":
        problems.add("quantization", "a quantized LLM (QLoRA) trains through LoRA: set trainable.llm: lora")
    trainable = config.trainable
    if not (trainable.projector or trainable.llm != "frozen" or trainable.vision != "frozen"):
        problems.add("trainable", "nothing trains (projector false, llm and vision frozen)")
    if config.feature_cache and trainable.vision != "frozen":
        problems.add("feature_cache", "a feature cache needs a frozen vision tower (trainable.vision: frozen)")
    for section in ("lora", "vision_lora"):
        check_lora(getattr(config, section), section, problems)
    check_training(config.training, problems)
    if check_files:
        check_paths(config, problems)
    problems.raise_if_any(path)
    return config


def check_lora(settings: dict, where: str, problems: Problems) -> None:
    """Keys must be peft ``LoraConfig`` fields."""
    known = {f.name for f in dataclasses.fields(lora_config_class())}
    for key in settings:
        if key not in known:
            problems.add(f"{where}.{key}", unknown_key(key, known))


def training_arguments(config: TrainConfig) -> TrainingArguments:
    """transformers' ``TrainingArguments`` for ``config``: the project's defaults under the config's own values."""
    return TrainingArguments(**{**TRAINING_DEFAULTS, **config.training})


def check_training(values: dict, problems: Problems) -> None:
    """The ``training:`` section: keys transformers' ``TrainingArguments`` knows, sane numbers, and whatever
    ``TrainingArguments`` itself refuses."""
    known = TrainingArguments.__dataclass_fields__
    before = len(problems)
    for key in values:
        if key not in known:
            problems.add(f"training.{key}", unknown_key(key, known))
    for key, bound in TRAINING_BOUNDS.items():
        value = values.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        strict, low = bound if isinstance(bound, tuple) else ("", bound)
        if value < low or (strict and value == low):
            problems.add(f"training.{key}", f"must be {'above' if strict else 'at least'} {low}, got {value}")
    if "output_dir" not in values:
        problems.add("training.output_dir", "required (where checkpoints go)")
    if len(problems) > before:
        return
    try:  # transformers' own checks (types, combinations), with a throwaway output folder
        TrainingArguments(**{**TRAINING_DEFAULTS, **values, "output_dir": values["output_dir"], "deepspeed": None})
    except (TypeError, ValueError) as exc:
        problems.add("training", str(exc).splitlines()[0])


def check_paths(config: TrainConfig, problems: Problems) -> None:
    """The files and folders the config names exist; the output folder is (or can be made) a writable folder."""
    from ..errors import CheckpointError
    from ..models.validity import check_checkpoint

    for key, value, kind in (
        *(("data.train", file, "file") for file in config.data.train_files),
        ("data.eval", config.data.eval, "file"),
        ("data.video_root", config.data.video_root, "folder"),
        ("data.image_root", config.data.image_root, "folder"),
        ("build", config.build, "file"),
        ("training.deepspeed", config.training.get("deepspeed"), "file"),
    ):
        if isinstance(value, str) and not (Path(value).is_file() if kind == "file" else Path(value).is_dir()):
            problems.add(key, f"{value}: no such {kind}")
    if config.model:
        try:
            check_checkpoint(config.model)
        except CheckpointError as exc:
            problems.add("model", str(exc))
    if not isinstance(config.training.get("output_dir"), str):
        return
    output = Path(config.training["output_dir"])
    if output.exists() and not output.is_dir():
        problems.add("training.output_dir", f"{output}: exists and is not a folder")
        return
    existing = next(p for p in [output, *output.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problems.add("training.output_dir", f"{output}: cannot be written ({existing} is not a writable folder)")
