"""SDPA attention that reads grouped-query keys and values in place.

With a mask (a prefill after a cached prefix, a batch with padding, the branch masks of independent turns),
transformers' ``sdpa`` attention copies every key/value head once per query head that shares it (``repeat_kv``)
before calling PyTorch's kernel on CPU. PyTorch's ``scaled_dot_product_attention`` reads shared heads itself
(``enable_gqa``), with the same result: this registers that path as ``sdpa_gqa`` (attention and mask functions) and
:func:`use_grouped_query_sdpa` puts an LLM that uses ``sdpa`` on it. Everything else goes to transformers' ``sdpa``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

GROUPED_QUERY_SDPA = "sdpa_gqa"


def grouped_query_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' ``sdpa`` attention, except that a masked query of several tokens reads shared key/value
    heads in place instead of copies."""
    shared = getattr(module, "num_key_value_groups", 1) > 1
    if attention_mask is None or not shared or query.shape[2] == 1 or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(GROUPED_QUERY_SDPA, grouped_query_sdpa)
AttentionMaskInterface.register(GROUPED_QUERY_SDPA, sdpa_mask)


def use_grouped_query_sdpa(llm: nn.Module) -> None:
    """Switch ``llm`` from transformers' ``sdpa`` attention to :func:`grouped_query_sdpa` (other kernels are kept)."""
    if llm.config._attn_implementation == "sdpa":
        llm.set_attn_implementation(GROUPED_QUERY_SDPA)


def set_attention(llm: nn.Module, implementation: str) -> None:
    """Switch ``llm`` to the attention ``implementation`` transformers names (``eager``, ``sdpa``, ...), ``sdpa`` on
    the grouped-query path the model loads with."""
    llm.set_attn_implementation(implementation)
    use_grouped_query_sdpa(llm)


def takes_boolean_mask(llm: nn.Module) -> bool:
    """Whether ``llm``'s attention takes a boolean mask (True: attend) rather than an additive one."""
    return llm.config._attn_implementation in ("sdpa", GROUPED_QUERY_SDPA)
