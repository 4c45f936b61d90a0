"""``slowfast``: SlowFast-LLaVA's two pathways over one MLP, training-free on an image LLM's projector.

The slow pathway keeps a few frames (``slow_frames``, evenly spaced) at a fine spatial grid (``slow_grid``):
what things look like. The fast pathway keeps every frame at a coarse grid (``fast_grid``): how they move.
Both are average-pooled from the patch grid before the shared MLP (so an image LLM's projector maps onto it
unchanged) and concatenated, slow tokens first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ...schema import knob
from .base import FeatureLayout, MLPSettings, TemporalProjector, build_mlp


@dataclass
class SlowFastSettings(MLPSettings):
    slow_frames: int = knob(8, "frames of the slow pathway (evenly spaced)", minimum=1)
    slow_grid: list = knob(doc="[h, w]: the slow pathway's pooled grid", factory=lambda: [12, 12])
    fast_grid: list = knob(doc="[h, w]: the fast pathway's pooled grid (every frame)", factory=lambda: [4, 4])


class SlowFastPooling(TemporalProjector):
    name = "slowfast"
    Settings = SlowFastSettings

    def __init__(self, settings, layout, vision_dim, llm_dim):
        super().__init__(settings, layout, vision_dim, llm_dim)
        self.mlp = build_mlp(vision_dim, llm_dim, self.settings["mlp_depth"], self.settings["act"])

    @classmethod
    def grids(
        cls, settings: dict, layout: FeatureLayout, num_frames: int
    ) -> tuple[int, tuple[int, int], tuple[int, int]]:
        """(slow frame count, slow grid, fast grid), each capped by the input."""
        for key in ("slow_grid", "fast_grid"):
            if len(settings[key]) != 2 or min(settings[key]) < 1:
                raise ConfigError(f"slowfast {key} must be two positive sizes [h, w], got {settings[key]}")
        cap = lambda grid: (min(grid[0], layout.grid_h), min(grid[1], layout.grid_w))  # noqa: E731
        return min(int(settings["slow_frames"]), num_frames), cap(settings["slow_grid"]), cap(settings["fast_grid"])

    @classmethod
    def count_tokens(cls, settings: dict, layout: FeatureLayout, num_frames: int) -> int:
        slow, (sh, sw), (fh, fw) = cls.grids(settings, layout, num_frames)
        return slow * sh * sw + num_frames * fh * fw

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self._check_input(features)
        b, t, _, d = features.shape
        slow, slow_grid, fast_grid = self.grids(self.settings, self.layout, t)
        frames = self._patch_grid(features).transpose(1, 2)  # (B, T, D, h, w)
        keep = torch.linspace(0, t - 1, slow, device=features.device).round().long()

        def pooled(volume: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:  # (B, T', D, h, w) -> (B, T'*gh*gw, D)
            n = volume.shape[1]
            out = F.adaptive_avg_pool2d(volume.reshape(b * n, d, *volume.shape[-2:]), grid)
            return out.reshape(b, n, d, -1).permute(0, 1, 3, 2).reshape(b, -1, d)

        tokens = torch.cat([pooled(frames[:, keep], slow_grid), pooled(frames, fast_grid)], dim=1)
        return self.mlp(tokens)
