"""A space-time encoder: a small transformer over every (frame, row, column) feature of a clip.

Pooling alone keeps *where* and *when* only in the order of the tokens it gives, which an LLM must learn to read
position by position. Run before pooling, self-attention over the whole feature volume lets every place's
feature take in what happens to it over time — the object that passes through it, which way it goes, when it
appears — so motion and identity reach the LLM as token content (the survey's temporal-modelling family:
Video-LLaMA's video Q-Former, VideoChat2's space-time attention). Layers are transformers' CLIP encoder layers
(pre-norm attention + MLP); learned row/column embeddings and time embeddings are added first. The time
embeddings are ``time_steps`` vectors interpolated over the clip's frames (relative time), so any frame count
works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoder


class SpaceTimeEncoder(nn.Module):
    """``(B, D, T, h, w)`` -> the same shape, each feature updated by attention over the whole volume."""

    def __init__(self, dim: int, grid: tuple[int, int], layers: int, heads: int, time_steps: int):
        super().__init__()
        self.grid = grid
        self.place_embeddings = nn.Embedding(grid[0] * grid[1], dim)
        self.time_embeddings = nn.Embedding(time_steps, dim)
        for table in (self.place_embeddings, self.time_embeddings):
            table.init_std = 1.0  # on the scale of vision features (std ~1-4), so place and time matter from step one
        config = CLIPVisionConfig(
            hidden_size=dim, intermediate_size=4 * dim, num_hidden_layers=layers, num_attention_heads=heads
        )
        config._attn_implementation = "sdpa"
        self.layers = CLIPEncoder(config)
        self.norm = nn.LayerNorm(dim)

    def time_table(self, num_frames: int) -> torch.Tensor:
        """``(num_frames, D)``: the learned time embeddings interpolated over the clip, first to last frame."""
        table = self.time_embeddings.weight
        if num_frames == table.shape[0]:
            return table
        if num_frames == 1 or table.shape[0] == 1:
            return table[:1].expand(num_frames, -1)
        return F.interpolate(table.T[None], size=num_frames, mode="linear", align_corners=True)[0].T

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        b, d, t, h, w = volume.shape
        tokens = volume.permute(0, 2, 3, 4, 1)  # (B, T, h, w, D)
        place = self.place_embeddings.weight.reshape(h, w, d)
        tokens = tokens + place.to(tokens.dtype) + self.time_table(t).to(tokens.dtype)[:, None, None, :]
        out = self.layers(inputs_embeds=tokens.reshape(b, t * h * w, d)).last_hidden_state
        return self.norm(out).reshape(b, t, h, w, d).permute(0, 4, 1, 2, 3)
