"""How training stores the frozen LLM's weights under mixed precision.

transformers' Trainer keeps float32 weights and runs the step under autocast, which takes a 16-bit copy of every
linear layer's weight at each use. A frozen weight never changes, so storing it in 16 bits once computes the same
numbers without those copies, in half the memory. Not under DeepSpeed (it casts the model itself) nor QLoRA (those
weights are quantized), and not the output head (often tied to the input embeddings, which autocast does not cast).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_of(training: dict) -> str:
    """``fp32``, or the mixed precision (``bf16``/``fp16``) a config's ``training:`` section asks for."""
    return "bf16" if training.get("bf16") else "fp16" if training.get("fp16") else "fp32"


def frozen_llm_dtype(precision: str, deepspeed: bool, llm: str) -> torch.dtype | None:
    """The dtype the frozen LLM's linear weights are stored in for training (``llm``: frozen, lora, qlora or
    full), or None where they stay as loaded."""
    if precision == "fp32" or deepspeed or llm not in ("frozen", "lora"):
        return None
    return PRECISIONS[precision]


def llm_linear_layers(llm: nn.Module) -> Iterator[nn.Linear]:
    """The LLM's own linear layers: not its output head, not LoRA's adapters (what QLoRA quantizes, too)."""
    for name, module in llm.named_modules():
        if isinstance(module, nn.Linear) and "lora_" not in name and not name.endswith("lm_head"):
            yield module


def store_frozen_llm_weights(llm: nn.Module, dtype: torch.dtype) -> None:
    """Store the weights of ``llm``'s frozen linear layers in ``dtype``."""
    for layer in llm_linear_layers(llm):
        if not layer.weight.requires_grad:
            layer.weight.data = layer.weight.data.to(dtype)
