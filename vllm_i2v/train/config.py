"""Training configs: one YAML file (``configs/train/*.yaml``) naming the model, the data, what trains, and
transformers' ``TrainingArguments``; ``key=value`` overrides on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import ConfigError
from ..models.spec import load_yaml

PART_MODES = {"llm": ("frozen", "lora", "full"), "vision": ("frozen", "lora", "full")}
QUANTIZATION = (None, "nf4", "int8")


def _from_dict(cls, values: dict | None, where: str):
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    return cls(**values)


@dataclass
class DataConfig:
    train: str = ""
    eval: str | None = None
    video_root: str | None = None
    format: str = "auto"
    num_frames: int = 8
    sampler: str = "segments"  # segments (TSN), uniform, fps
    random_offset: bool = True  # segments: a random frame in each segment (training) or its middle
    fps: float | None = None
    strict: bool = False  # stop at the first bad row instead of skipping it
    decode_timeout: float = 60.0  # seconds; a video whose decoder hangs longer is skipped and logged


@dataclass
class TrainableConfig:
    projector: bool = True
    llm: str = "frozen"  # frozen | lora | full
    vision: str = "frozen"  # frozen | lora | full


@dataclass
class TrainConfig:
    model: str | None = None  # a VideoLLM checkpoint (full or trainable-only) to start from
    build: str | None = None  # or a build spec (configs/model/*.yaml), built once into OUTPUT_DIR/base
    data: DataConfig = field(default_factory=DataConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    lora: dict = field(default_factory=lambda: {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"})
    vision_lora: dict = field(default_factory=lambda: {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0})
    quantization: str | None = None  # nf4 | int8: QLoRA, the frozen LLM quantized by bitsandbytes
    projector_lr: float | None = None  # the projector's own learning rate (default: training.learning_rate)
    feature_cache: str | None = None  # folder: frozen-tower features extracted once, read every epoch
    save_full: bool = False  # also write a standalone merged checkpoint to OUTPUT_DIR/final-merged
    training: dict = field(default_factory=dict)  # transformers TrainingArguments

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


def load_train_config(path, overrides: list[str] = ()) -> TrainConfig:
    """Read and check a training config; every inconsistency is a one-line :class:`ConfigError`."""
    values = load_yaml(path, overrides, "training config")
    where = str(path)
    data = _from_dict(DataConfig, values.pop("data", None), f"{where}: data")
    trainable = _from_dict(TrainableConfig, values.pop("trainable", None), f"{where}: trainable")
    config = _from_dict(TrainConfig, values, where)
    config.data, config.trainable = data, trainable
    if bool(config.model) == bool(config.build):
        raise ConfigError(f"{where}: name exactly one of model (a checkpoint) or build (a build spec)")
    if not data.train:
        raise ConfigError(f"{where}: data.train (a dataset file) is required")
    for part, modes in PART_MODES.items():
        if getattr(trainable, part) not in modes:
            raise ConfigError(f"{where}: trainable.{part} must be one of {', '.join(modes)}")
    if config.quantization not in QUANTIZATION:
        raise ConfigError(f"{where}: quantization must be nf4, int8 or null")
    if config.quantization and trainable.llm != "lora":
        raise ConfigError(f"{where}: a quantized LLM (QLoRA) trains through LoRA: set trainable.llm: lora")
    if not (trainable.projector or trainable.llm != "frozen" or trainable.vision != "frozen"):
        raise ConfigError(f"{where}: nothing trains (projector false, llm and vision frozen)")
    if config.feature_cache and trainable.vision != "frozen":
        raise ConfigError(f"{where}: a feature cache needs a frozen vision tower (trainable.vision: frozen)")
    if "output_dir" not in config.training:
        raise ConfigError(f"{where}: training.output_dir is required")
    return config
