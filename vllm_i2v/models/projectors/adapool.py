"""``adapool``: PLLaVA-style adaptive 3D average pooling of the (T, h, w) feature volume to a target grid + MLP.

The target ``grid: [t, h, w]`` is capped by the input (a 4-frame clip pooled to t=16 keeps 4 frames), so an
image (T=1) costs ``h * w`` tokens. Pooling happens before the MLP (cheaper, and linear in the features as
LLaVA-NeXT-Video's pooling is); PLLaVA pools after its projector.

``temporal_embeddings: true`` adds a learned embedding per pooled time step before the MLP (as Video-LLaMA's
Q-Former does per frame). Without it a token says what is where but not *when*: an LLM's rotary positions
shape attention weights, not the values read, so telling left-to-right from right-to-left motion must then be
learned as position-selective attention (seen here: 450 steps with SmolLM2 + LoRA never learned it, though a
linear probe on the pooled features reads the direction at 99%).

``motion_tokens: true`` appends two tokens per clip that say where each feature channel moved: the first
spatial moments (along x, along y) of the frame-to-frame feature change, over the full patch grid, before
pooling; no weights. Pooled tokens keep *where* only in their order, which an LLM reads through attention
patterns it must learn position by position; these two tokens put the motion of whatever each channel encodes
into values the LLM can look up by content ("the red circle's channels moved +x"). Seen here with SmolLM2 +
LoRA on shapes-world direction questions alone, 150 steps: 51% with them; at chance (26%) with the pooled
tokens alone, even with a learned embedding per (time, row, column) token added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...schema import knob
from .base import FeatureLayout, MLPSettings, TemporalProjector, build_mlp
from .encoder import SpaceTimeEncoder


@dataclass
class AdaptivePoolingSettings(MLPSettings):
    grid: list = knob(doc="[t, h, w]: the pooled grid (capped by the input)", factory=lambda: [16, 12, 12])
    temporal_embeddings: bool = knob(False, "a learned embedding per pooled time step, added before the MLP")
    motion_tokens: bool = knob(False, "+2 tokens: where each feature channel moved along x and y (no weights)")
    cell_motion: bool = knob(
        False, "each token also carries when its content was there (per channel) and which way it moved (no weights)"
    )
    encoder_layers: int = knob(
        0, "layers of a space-time transformer over the features before pooling (0: none)", minimum=0
    )
    encoder_heads: int | None = knob(None, "its attention heads (default: width / 64)", minimum=1)
    encoder_time_steps: int = knob(8, "its learned time embeddings, interpolated over any number of frames", minimum=1)


class AdaptivePooling(TemporalProjector):
    name = "adapool"
    Settings = AdaptivePoolingSettings

    def __init__(self, settings, layout, vision_dim, llm_dim):
        super().__init__(settings, layout, vision_dim, llm_dim)
        if self.settings["cell_motion"] and self.settings["motion_tokens"]:
            raise ConfigError("adapool: cell_motion and motion_tokens exclude each other (the first is the local form)")
        width = 4 * vision_dim if self.settings["cell_motion"] else vision_dim  # + when, + moving along x and y
        self.mlp = build_mlp(width, llm_dim, self.settings["mlp_depth"], self.settings["act"])
        self.encoder = None
        if self.settings["encoder_layers"]:
            heads = self.settings["encoder_heads"] or max(1, vision_dim // 64)
            if vision_dim % heads:
                raise ConfigError(f"adapool encoder_heads ({heads}) must divide the vision width {vision_dim}")
            grid = (layout.grid_h, layout.grid_w)
            self.encoder = SpaceTimeEncoder(
                vision_dim, grid, self.settings["encoder_layers"], heads, self.settings["encoder_time_steps"]
            )
        self.time_embeddings = None
        if self.settings["temporal_embeddings"]:
            self.time_embeddings = nn.Embedding(self.settings["grid"][0], vision_dim)
            self.time_embeddings.init_std = 1.0  # on the scale of vision features, so time matters from step one

    @classmethod
    def output_grid(cls, settings: dict, layout: FeatureLayout, num_frames: int) -> tuple[int, int, int]:
        grid = settings["grid"]
        if len(grid) != 3 or min(grid) < 1:
            raise ConfigError(f"adapool grid must be three positive sizes [t, h, w], got {grid}")
        return min(grid[0], num_frames), min(grid[1], layout.grid_h), min(grid[2], layout.grid_w)

    @classmethod
    def count_tokens(cls, settings: dict, layout: FeatureLayout, num_frames: int) -> int:
        t, h, w = cls.output_grid(settings, layout, num_frames)
        return t * h * w + (2 if settings.get("motion_tokens") else 0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self._check_input(features)
        volume = self._patch_grid(features)  # (B, D, T, h, w)
        if self.encoder is not None:
            volume = self.encoder(volume)
        pooled = F.adaptive_avg_pool3d(volume, self.output_grid(self.settings, self.layout, features.shape[1]))
        if self.time_embeddings is not None:  # (t, D) -> (1, D, t, 1, 1)
            steps = self.time_embeddings.weight[: pooled.shape[2]].to(pooled.dtype)
            pooled = pooled + steps.T[None, :, :, None, None]
        if self.settings["cell_motion"]:
            pooled = torch.cat([pooled, local_motion(volume, pooled.shape[2:])], dim=1)
        tokens = pooled.flatten(2)  # (B, D, t*h*w) in (time, row, column) order
        if self.settings["motion_tokens"]:
            tokens = torch.cat([tokens, motion_moments(volume)], dim=2)
        return self.mlp(tokens.transpose(1, 2))


def motion_moments(volume: torch.Tensor) -> torch.Tensor:
    """(B, D, 2): where each feature channel moved over the clip, along x and along y: the first spatial moments
    of its frame-to-frame change, sum over t, y, x of x * (f[t+1] - f[t]) (and y *), coordinates in [-1, 1]."""
    b, d, t, h, w = volume.shape
    if t < 2:
        return volume.new_zeros(b, d, 2)
    change = volume[:, :, 1:] - volume[:, :, :-1]  # (B, D, T-1, h, w)
    xs = torch.linspace(-1, 1, w, dtype=volume.dtype, device=volume.device)
    ys = torch.linspace(-1, 1, h, dtype=volume.dtype, device=volume.device)
    along_x = (change * xs).sum(dim=(2, 3, 4))
    along_y = (change * ys[:, None]).sum(dim=(2, 3, 4))
    return torch.stack([along_x, along_y], dim=2) / (h * w) ** 0.5


def local_motion(volume: torch.Tensor, grid, eps: float = 1e-3) -> torch.Tensor:
    """(B, 3D, t, h', w'): for every pooled cell and channel, when its content was there and which way it moved,
    from the patch grid ``volume`` (B, D, T, h, w); no weights.

    *When*: the covariance of time with the channel (early < 0 < late). *Which way*: the features weighted by the
    local flow along x and along y, so that a channel carries its content's motion in its own value (a still object
    gives zeros, a red square moving right the red square's features in the x part). The flow is Lucas-Kanade's over
    all channels at once: in each patch's 3x3 neighbourhood and between consecutive frames, the displacement (in
    patches per frame) that best explains the temporal change by the spatial gradients."""
    b, d, t, h, w = volume.shape
    times = torch.linspace(-1, 1, t, dtype=volume.dtype, device=volume.device).view(1, 1, t, 1, 1)
    when = (times * volume).mean(2, keepdim=True) - times.mean() * volume.mean(2, keepdim=True)  # (B, D, 1, h, w)
    when = F.adaptive_avg_pool3d(when, (1, *grid[1:])).expand(-1, -1, grid[0], -1, -1)
    if t < 2:
        return torch.cat([when, volume.new_zeros(b, 2 * d, *grid)], dim=1)
    middle = (volume[:, :, 1:] + volume[:, :, :-1]) / 2  # (B, D, T-1, h, w)
    dt = volume[:, :, 1:] - volume[:, :, :-1]
    dx = torch.gradient(middle, dim=4)[0]
    dy = torch.gradient(middle, dim=3)[0]
    window = lambda v: F.avg_pool3d(v.sum(1, keepdim=True), (1, 3, 3), stride=1, padding=(0, 1, 1))  # noqa: E731
    xx, xy, yy, xt, yt = (window(a * c) for a, c in ((dx, dx), (dx, dy), (dy, dy), (dx, dt), (dy, dt)))
    scale = eps * (xx + yy).mean(dim=(2, 3, 4), keepdim=True) + 1e-12  # regularizes where nothing has texture
    det = (xx + scale) * (yy + scale) - xy * xy
    flow_x = -((yy + scale) * xt - xy * yt) / det  # (B, 1, T-1, h, w)
    flow_y = -((xx + scale) * yt - xy * xt) / det
    moving = [F.adaptive_avg_pool3d(middle * flow, grid) for flow in (flow_x, flow_y)]
    return torch.cat([when, *moving], dim=1)
