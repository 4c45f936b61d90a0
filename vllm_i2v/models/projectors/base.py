"""What every temporal projector shares: the layout of the features it reads, its MLP, and its contract."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN

from ...errors import ConfigError
from ...schema import Problems, knob, read


@dataclass
class MLPSettings:
    """What every projector's MLP (LLaVA's ``mlp{depth}x_{act}``) takes."""

    mlp_depth: int = knob(2, "linear layers in the MLP into the LLM's width", minimum=1)
    act: str = knob("gelu", "activation between them (a transformers ACT2FN name)")


@dataclass(frozen=True)
class FeatureLayout:
    """Per-frame features are ``prefix`` tokens (CLS, registers) followed by a ``grid_h x grid_w`` patch grid."""

    grid_h: int
    grid_w: int
    prefix: int = 0

    @property
    def tokens_per_frame(self) -> int:
        return self.prefix + self.grid_h * self.grid_w


def build_mlp(in_dim: int, out_dim: int, depth: int = 2, act: str = "gelu") -> nn.Sequential:
    """LLaVA's ``mlp{depth}x_{act}``: Linear(in, out), then (act, Linear(out, out)) ``depth - 1`` times."""
    if depth < 1:
        raise ConfigError(f"mlp_depth must be at least 1, got {depth}")
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(depth - 1):
        layers += [ACT2FN[act], nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


class TemporalProjector(nn.Module):
    """Maps features ``(B, T, layout.tokens_per_frame, D_vision)`` to visual tokens ``(B, M, D_llm)``.

    Subclasses declare ``name`` and their settings as a schema dataclass ``Settings`` (each knob with its
    default and what it does), implement :meth:`count_tokens` (M for T frames, computable from the config alone)
    and ``forward``.
    """

    name: str = ""
    Settings: type = MLPSettings

    def __init__(self, settings: dict, layout: FeatureLayout, vision_dim: int, llm_dim: int):
        super().__init__()
        self.settings = self.resolve(settings)
        self.layout = layout
        self.vision_dim = vision_dim
        self.llm_dim = llm_dim

    @classmethod
    def resolve(cls, settings: dict) -> dict:
        """The projector's settings with defaults filled; an unknown key, a wrong type or value is an error."""
        problems = Problems()
        values = read(cls.Settings, {k: v for k, v in settings.items() if k != "type"}, "", problems)
        problems.raise_if_any(f"projector {cls.name!r}")
        return asdict(values)

    @classmethod
    def count_tokens(cls, settings: dict, layout: FeatureLayout, num_frames: int) -> int:
        raise NotImplementedError

    def num_tokens(self, num_frames: int) -> int:
        """Visual tokens produced for ``num_frames`` frames."""
        return self.count_tokens(self.settings, self.layout, num_frames)

    def _check_input(self, features: torch.Tensor) -> None:
        if features.ndim != 4 or features.shape[2] != self.layout.tokens_per_frame:
            raise ValueError(
                f"{self.name}: expected features (B, T, {self.layout.tokens_per_frame}, D), got {tuple(features.shape)}"
            )

    def _patch_grid(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, T, N, D)`` -> ``(B, D, T, grid_h, grid_w)``; the projector must not see prefix tokens."""
        if self.layout.prefix:
            raise ConfigError(
                f"projector {self.name!r} pools the patch grid and cannot take CLS/register tokens: "
                "set vision_feature_select: patch"
            )
        b, t, _, d = features.shape
        return features.reshape(b, t, self.layout.grid_h, self.layout.grid_w, d).permute(0, 4, 1, 2, 3)
