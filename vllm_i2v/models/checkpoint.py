"""Trained checkpoints that hold only what trained (projector, LoRA, tuned parts), and merging them.

A trainable-only checkpoint is a folder with ``config.json`` (the VideoLLM config, LoRA settings included),
the tokenizer files, ``trainable.safetensors`` and ``trainable.json`` (the base checkpoint it applies to and
the names of the weights it holds); a *parts bundle* (:func:`export_parts`) names, instead of a base checkpoint,
its own tower folder and an LLM to load. :func:`load_model` loads either kind of checkpoint; :func:`merge_checkpoint`
folds LoRA into the base weights and writes a standalone checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path, respect_umask, write_text_atomic
from ..errors import CheckpointError
from .configuration import VideoLLMConfig
from .loading import check_loading_info
from .lora import add_lora, merge_lora
from .modeling import VideoLLM
from .validity import TRAINABLE_INDEX, TRAINABLE_WEIGHTS, check_checkpoint


def trainable_names(model: torch.nn.Module) -> list[str]:
    """Names of the parameters that train (``requires_grad``)."""
    return [name for name, param in model.named_parameters() if param.requires_grad]


def save_trainable(model: VideoLLM, output_dir, base_checkpoint, state_dict: dict | None = None) -> Path:
    """Write a trainable-only checkpoint of ``model`` (``state_dict``: a gathered one, under DeepSpeed ZeRO-3)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = trainable_names(model)
    state = state_dict if state_dict else model.state_dict()
    missing = [n for n in names if n not in state]
    if missing:
        raise CheckpointError(f"{output_dir}: trainable weights absent from the state dict to save: {missing[:5]}")
    weights = {n: state[n].detach().to("cpu").contiguous() for n in names}
    with atomic_path(output_dir / TRAINABLE_WEIGHTS) as tmp:
        save_file(weights, str(tmp), metadata={"format": "pt"})
    model.config.save_pretrained(output_dir)
    index = {"base_checkpoint": str(Path(base_checkpoint).resolve()), "weights": sorted(names)}
    write_text_atomic(output_dir / TRAINABLE_INDEX, json.dumps(index, indent=1) + "\n")
    return output_dir


def is_trainable_only(path) -> bool:
    return (Path(path) / TRAINABLE_INDEX).is_file()


def load_trainable(model: VideoLLM, path) -> None:
    """Load a trainable-only checkpoint's weights into ``model`` (which must have the same adapters)."""
    path = Path(path)
    index = json.loads((path / TRAINABLE_INDEX).read_text())
    weights = load_file(str(path / TRAINABLE_WEIGHTS))
    listed, present = set(index["weights"]), set(weights)
    state = model.state_dict()
    report = {
        "missing_keys": listed - present,
        "unexpected_keys": present - set(state),
        "mismatched_keys": [
            (n, weights[n].shape, state[n].shape) for n in present & set(state) if state[n].shape != weights[n].shape
        ],
    }
    check_loading_info(path, "trained", report)
    model.load_state_dict(weights, strict=False)


def load_model(path, **kwargs) -> VideoLLM:
    """Load a full or trainable-only checkpoint (its base first, itself possibly trainable-only, then the
    adapters and trained weights) or a parts bundle; a broken one is a one-line :class:`CheckpointError`."""
    check_checkpoint(path)
    if not is_trainable_only(path):
        return VideoLLM.from_pretrained(path, **kwargs)  # (which sends trainable-only folders back here)
    index = json.loads((Path(path) / TRAINABLE_INDEX).read_text())
    if "base_parts" in index:
        model = _load_parts(Path(path), index["base_parts"], kwargs.get("quantization_config"))
    else:
        model = load_model(index["base_checkpoint"], **kwargs)
    config = VideoLLMConfig.from_pretrained(path)
    if config.projector != model.config.projector:  # weight-free settings changed in training (projector_changes)
        model.change_projector(config.projector)
    model.config.independent_turns = config.independent_turns  # how it was trained (chat asks it the same way)
    attach_adapters(model, config)
    load_trainable(model, path)
    return model.eval()  # as from_pretrained returns a full one (the adapters were added in training mode)


def attach_adapters(model: VideoLLM, config: VideoLLMConfig) -> None:
    """Give ``model`` the LoRA adapters ``config`` declares and it lacks."""
    if config.llm_lora and not model.config.llm_lora:
        add_lora(model.language_model, config.llm_lora)
        model.config.llm_lora = config.llm_lora
    if config.vision_lora and not model.config.vision_lora:
        model.vision_tower.add_lora(config.vision_lora)
        model.config.vision_lora = config.vision_lora


def merge_checkpoint(src, dst, lora_scale: float = 1.0) -> dict:
    """Load ``src`` (any checkpoint), fold its LoRA into the base weights (the LLM's scaled by ``lora_scale``)
    and save a standalone checkpoint with its tokenizer to ``dst``. Returns what was merged."""
    from .processor import VideoLLMProcessor

    model = load_model(src)
    merged = {
        "llm": merge_lora(model.language_model, lora_scale),
        "vision": merge_lora(model.vision_tower.model, 1.0),
    }
    model.config.llm_lora = None
    model.config.vision_lora = None
    model.save_pretrained(dst)
    VideoLLMProcessor.from_pretrained(src).save_pretrained(dst)
    return merged


def export_parts(checkpoint, out_dir, llm_source: str, dtype=torch.float16) -> Path:
    """Write a trained checkpoint whose vision tower stayed frozen as a *parts bundle*: the tower (its own folder),
    the trained weights (projector, LoRA), config and tokenizer in ``dtype``, and ``trainable.json`` naming the
    LLM by ``llm_source`` (a ``package://`` path, a folder or a GGUF file) instead of copying it.
    :func:`load_model` loads a bundle like any checkpoint."""
    from .preprocess import PreprocessSpec, image_processor_config
    from .processor import VideoLLMProcessor

    if not is_trainable_only(checkpoint):
        raise CheckpointError(f"{checkpoint}: not a trainable-only checkpoint (no {TRAINABLE_INDEX})")
    names = json.loads((Path(checkpoint) / TRAINABLE_INDEX).read_text())["weights"]
    model = load_model(checkpoint)
    if model.config.vision_lora:
        raise CheckpointError(f"{checkpoint}: the vision tower has LoRA; a parts bundle needs a frozen tower")
    state = model.state_dict()
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tower = model.vision_tower.model
        tower.to(dtype).save_pretrained(tmp / "tower")
        preprocess = image_processor_config(PreprocessSpec.from_dict(model.config.vision_preprocess))
        write_text_atomic(tmp / "tower" / "preprocessor_config.json", json.dumps(preprocess, indent=2) + "\n")
        save_file(
            {n: state[n].to(dtype).contiguous() for n in names}, str(tmp / TRAINABLE_WEIGHTS), metadata={"format": "pt"}
        )
        for sub_config in (model.config.vision_config, model.config.text_config):
            sub_config.name_or_path = ""  # where the parts were built from: a path on the build machine
        model.config.save_pretrained(tmp)
        VideoLLMProcessor.from_pretrained(checkpoint).save_pretrained(tmp)
        index = {"base_parts": {"vision": "tower", "llm": llm_source}, "weights": sorted(names)}
        write_text_atomic(tmp / TRAINABLE_INDEX, json.dumps(index, indent=1) + "\n")
        respect_umask(tmp)
    return out_dir


def _load_parts(path: Path, parts: dict, quantization_config=None) -> VideoLLM:
    """The base model of a parts bundle: its tower folder and the LLM it names (quantized by
    ``quantization_config`` for QLoRA), under the bundle's config."""
    from .builder import load_llm
    from .vision import load_pretrained_vision

    config = VideoLLMConfig.from_pretrained(path)
    config.llm_lora = config.vision_lora = None  # attached afterwards, from the bundle's own config
    vision, _ = load_pretrained_vision(str(path / parts["vision"]), dtype=torch.float32)
    llm, _ = load_llm(parts["llm"], dtype=torch.float32, quantization_config=quantization_config)
    return VideoLLM(config, vision_model=vision, language_model=llm).eval()
