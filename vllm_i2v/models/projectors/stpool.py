"""``stpool``: Video-ChatGPT's spatio-temporal pooling + MLP.

The mean over space of each frame gives one token per frame (T tokens, in frame order); the mean over time
of each patch position gives one token per patch (N tokens, blind to frame order). Both are concatenated
(T + N tokens) and projected to the LLM width.
"""

from __future__ import annotations

import torch

from .base import FeatureLayout, TemporalProjector, build_mlp


class SpatioTemporalPooling(TemporalProjector):
    name = "stpool"

    def __init__(self, settings, layout, vision_dim, llm_dim):
        super().__init__(settings, layout, vision_dim, llm_dim)
        self.mlp = build_mlp(vision_dim, llm_dim, self.settings["mlp_depth"], self.settings["act"])

    @classmethod
    def count_tokens(cls, settings: dict, layout: FeatureLayout, num_frames: int) -> int:
        return num_frames + layout.tokens_per_frame

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self._check_input(features)
        per_frame = features.mean(dim=2)  # (B, T, D): spatial mean, one token per frame
        per_patch = features.mean(dim=1)  # (B, N, D): temporal mean, one token per patch
        return self.mlp(torch.cat([per_frame, per_patch], dim=1))
