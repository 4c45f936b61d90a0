"""``mlp``: per-frame tokens, optionally pooled over the patch grid with a stride (LLaVA-NeXT-Video), + MLP.

With ``pool_stride: 1`` every frame keeps all its tokens (prefix tokens included when the tower keeps them,
as Video-LLaVA does). With ``pool_stride: s > 1`` each frame's ``h x w`` grid is average- (or max-) pooled
with an ``s x s`` kernel and stride ``s`` before the MLP, giving ``(h // s) * (w // s)`` tokens per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...schema import knob
from .base import FeatureLayout, MLPSettings, TemporalProjector, build_mlp


@dataclass
class FrameMLPSettings(MLPSettings):
    pool_stride: int = knob(
        1, "pool each frame's patch grid with this kernel and stride first (1: no pooling)", minimum=1
    )
    pool_mode: Literal["avg", "max"] = knob("avg", "how the grid is pooled")


class FrameMLP(TemporalProjector):
    name = "mlp"
    Settings = FrameMLPSettings

    def __init__(self, settings, layout, vision_dim, llm_dim):
        super().__init__(settings, layout, vision_dim, llm_dim)
        self.mlp = build_mlp(vision_dim, llm_dim, self.settings["mlp_depth"], self.settings["act"])

    @classmethod
    def count_tokens(cls, settings: dict, layout: FeatureLayout, num_frames: int) -> int:
        stride = int(settings["pool_stride"])
        if stride == 1:
            return num_frames * layout.tokens_per_frame
        return num_frames * (layout.grid_h // stride) * (layout.grid_w // stride)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self._check_input(features)
        stride = int(self.settings["pool_stride"])
        b, t, n, d = features.shape
        if stride > 1:
            grid = self._patch_grid(features).transpose(1, 2).reshape(b * t, d, self.layout.grid_h, self.layout.grid_w)
            pool = F.avg_pool2d if self.settings["pool_mode"] == "avg" else F.max_pool2d
            features = pool(grid, kernel_size=stride, stride=stride).flatten(2).transpose(1, 2)  # (B*T, n', D)
        return self.mlp(features.reshape(b, -1, d))
