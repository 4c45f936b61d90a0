"""LoRA adapters (peft) injected into a VideoLLM's parts, and folding them back into the base weights."""

from __future__ import annotations

from torch import nn

LORA_DEFAULTS = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"}


def lora_config_class():
    """peft's ``LoraConfig``, whose fields LoRA settings are (imported when needed)."""
    from peft import LoraConfig

    return LoraConfig


def add_lora(module: nn.Module, settings: dict) -> None:
    """Inject LoRA adapters into ``module`` (peft's ``inject_adapter_in_model``) and make only them trainable.

    ``settings`` are peft ``LoraConfig`` fields; ``target_modules: all-linear`` takes every linear layer
    except a causal LM's output layer.
    """
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(**{**LORA_DEFAULTS, **settings}), module)
    for name, param in module.named_parameters():
        param.requires_grad_("lora_" in name)


def merge_lora(module: nn.Module, scale: float = 1.0) -> int:
    """Fold every LoRA adapter in ``module`` into its base layer (times ``scale``, PLLaVA's post-hoc scaling)
    and put the plain base layer back in its place. Returns how many layers were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, layer in list(module.named_modules()):
        if not isinstance(layer, LoraLayer):
            continue
        for adapter in layer.scaling:
            layer.scaling[adapter] *= scale
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
        merged += 1
    return merged
