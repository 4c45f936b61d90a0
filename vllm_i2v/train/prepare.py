"""Model set-up for training: load (or build) the model, quantize the LLM for QLoRA, add LoRA, freeze the rest."""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_path
from ..models import VideoLLMProcessor, build_video_llm
from ..models.attention import set_attention
from ..models.checkpoint import load_model
from ..models.lora import add_lora
from ..models.spec import load_build_spec
from .config import TrainConfig
from .precision import frozen_llm_dtype, precision_of, store_frozen_llm_weights


def base_checkpoint(config: TrainConfig) -> Path:
    """The checkpoint training starts from: ``model``, or ``build`` built once into ``OUTPUT_DIR/base``."""
    if config.model:
        return Path(config.model)
    base = Path(config.training["output_dir"]) / "base"
    if not base.is_dir():
        model, processor = build_video_llm(load_build_spec(config.build))
        with atomic_path(base) as tmp:  # the folder appears complete or not at all
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
    return base


def quantization_config(config: TrainConfig):
    """bitsandbytes settings that quantize the LLM's linear layers only (QLoRA), or None."""
    if not config.quantization:
        return None
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if config.training.get("bf16") else torch.float32
    skip = ["vision_tower", "projector", "lm_head"]
    if config.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=skip,
    )


def keep_4bit_weights_trainable(model: torch.nn.Module) -> int:
    """Stop bitsandbytes' CPU inference repacking of 4-bit weights.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a ``Linear4bit`` weight for its inference kernel on
    the first eval-mode ``no_grad`` forward (an evaluation, a sample generation); LoRA gradients through it
    are then silently ``None`` and the loss stays flat. Returns how many layers were set.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def set_trainable(model, config: TrainConfig) -> None:
    """Freeze everything, then unfreeze the parts ``config.trainable`` names, adding LoRA where asked."""
    model.requires_grad_(False)
    if config.trainable.projector:
        model.projector.requires_grad_(True)
    for part, module, settings in (
        ("llm", model.language_model, config.lora),
        ("vision", model.vision_tower, config.vision_lora),
    ):
        mode = getattr(config.trainable, part)
        if mode == "full":
            module.unfreeze() if part == "vision" else module.requires_grad_(True)
        elif mode == "lora" and getattr(model.config, f"{part}_lora"):  # the checkpoint has adapters: train them
            for name, param in module.named_parameters():
                param.requires_grad_("lora_" in name)
        elif mode == "lora":
            setattr(model.config, f"{part}_lora", dict(settings))
            if part == "llm":
                add_lora(module, settings)
            else:
                module.add_lora(settings)


def expected_trainable(model, config: TrainConfig) -> set[str]:
    """Names of the parameters the config says train (what the trainability check holds the run to)."""
    parts = []
    if config.trainable.projector:
        parts.append(("projector.", False))
    for part, prefix in (("llm", "language_model."), ("vision", "vision_tower.")):
        mode = getattr(config.trainable, part)
        if mode != "frozen":
            parts.append((prefix, mode == "lora"))
    expected = {
        name
        for name, param in model.named_parameters()
        if param.dtype.is_floating_point
        and any(name.startswith(prefix) and (not lora_only or "lora_" in name) for prefix, lora_only in parts)
    }
    if config.trainable.vision == "full":  # only what the selected features depend on (see VisionTower.unfreeze)
        unused = {f"vision_tower.{n}" for n, p in model.vision_tower.named_parameters() if not p.requires_grad}
        expected -= unused
    return expected


def prepare_model(config: TrainConfig, args):
    """``(model, processor, base)``: the model to train, with what trains set as the config says.

    ``args`` (TrainingArguments) orders the ranks: the main process builds the base checkpoint first.
    """
    with args.main_process_first(desc="base checkpoint"):
        base = base_checkpoint(config)
    # Weights stay float32 (bf16: true is autocast, as transformers' Trainer does it): Adam updates of bf16 weights
    # round away (a LayerNorm weight of 1.0 does not move by 1e-4), so a pure-bf16 model trains badly. Frozen
    # linear weights of the LLM never update: they are stored in the autocast dtype (train.precision).
    kwargs = {"quantization_config": quantization_config(config)} if config.quantization else {}
    model = load_model(base, **kwargs)
    if config.projector_changes:
        model.change_projector({**model.config.projector, **config.projector_changes})
    model.config.independent_turns = config.data.independent_turns  # saved with it: how chat asks it (VideoLLMConfig)
    processor = VideoLLMProcessor.from_pretrained(base, config=model.config)  # the visual tokens the model makes
    set_trainable(model, config)
    stored = frozen_llm_dtype(precision_of(config.training), bool(config.training.get("deepspeed")), config.llm_mode)
    if stored:
        store_frozen_llm_weights(model.language_model, stored)
        own_weights(model)  # else the checkpoint file's float32 pages stay mapped beside the 16-bit copies
    if config.attention:
        set_attention(model.language_model, config.attention)
    if config.quantization:
        keep_4bit_weights_trainable(model)
        own_weights(model)
        model._hf_peft_config_loaded = (
            True  # LoRA is attached: what transformers checks before training a quantized model
        )
    return model, processor, base


def own_weights(model: torch.nn.Module) -> None:
    """Copy the weights that still view the checkpoint file (transformers maps safetensors files and loads without
    copying) into memory of their own, so that the file's mapping, all of it read while quantizing or casting, is let
    go; bitsandbytes' quantized weights are their own already. The bundled model under QLoRA holds 0.97 GiB resident
    after loading without this, 0.68 GiB with it."""
    with torch.no_grad():
        for param in model.parameters():
            if type(param) is torch.nn.Parameter:  # not a bitsandbytes Params4bit / Int8Params
                param.data = param.data.clone()


def parameter_report(model, config: TrainConfig) -> str:
    """Trainable / total parameters per part, as printed at start-up."""
    rows = []
    total_trainable = total = 0
    for label, part in (
        ("vision tower", model.vision_tower),
        ("projector", model.projector),
        ("LLM", model.language_model),
    ):
        sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in part.parameters()]  # ZeRO-3: ds_numel
        n_total = sum(n for n, _ in sizes)
        n_train = sum(n for n, trains in sizes if trains)
        total, total_trainable = total + n_total, total_trainable + n_train
        state = "frozen" if not n_train else ("trains" if n_train == n_total else "partly trains (adapters)")
        rows.append(f"  {label:<13}{n_train / 1e6:10.3f}M / {n_total / 1e6:9.3f}M  {state}")
    share = 100 * total_trainable / max(total, 1)
    header = f"trainable parameters ({config.describe_trainable()}):"
    footer = f"  {'total':<13}{total_trainable / 1e6:10.3f}M / {total / 1e6:9.3f}M  ({share:.2f}%)"
    return "\n".join([header, *rows, footer])
