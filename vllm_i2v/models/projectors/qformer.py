"""``qformer``: BLIP-2 Q-Former (transformers' ``Blip2QFormerModel``) with temporal position embeddings.

Learned queries cross-attend to the frame features, to which a learned embedding of each frame's position
in time is added (so the output depends on frame order). ``mode: video`` (Video-LLaMA's video Q-Former):
``num_queries`` queries attend to the patches of all frames at once and give ``num_queries`` tokens.
``mode: frame`` (VideoChat / per-frame BLIP-2): the queries attend to each frame separately and give
``T * num_queries`` tokens. A linear layer maps the query outputs to the LLM width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from ...errors import ConfigError
from ...schema import knob
from .base import FeatureLayout, TemporalProjector


@dataclass
class QFormerSettings:
    mode: Literal["video", "frame"] = knob("video", "video: queries over all frames at once; frame: per frame")
    num_queries: int = knob(32, "learned queries (tokens per call)", minimum=1)
    hidden_size: int = knob(768, "the Q-Former's width", minimum=1)
    num_layers: int = knob(2, "Q-Former layers", minimum=1)
    num_heads: int = knob(12, "attention heads (dividing hidden_size)", minimum=1)
    intermediate_size: int = knob(3072, "MLP width inside each layer", minimum=1)
    temporal_embeddings: bool = knob(
        True, "a learned embedding of each frame's position in time, added to its features"
    )
    max_frames: int = knob(64, "frames the temporal embeddings cover", minimum=1)


class QFormerProjector(TemporalProjector):
    name = "qformer"
    Settings = QFormerSettings

    def __init__(self, settings, layout, vision_dim, llm_dim):
        super().__init__(settings, layout, vision_dim, llm_dim)
        s = self.settings
        config = Blip2QFormerConfig(
            hidden_size=s["hidden_size"],
            num_hidden_layers=s["num_layers"],
            num_attention_heads=s["num_heads"],
            intermediate_size=s["intermediate_size"],
            encoder_hidden_size=vision_dim,
            cross_attention_frequency=1,
            use_qformer_text_input=False,
        )
        self.queries = nn.Parameter(torch.zeros(1, s["num_queries"], s["hidden_size"]))
        nn.init.normal_(self.queries, std=0.02)
        self.qformer = Blip2QFormerModel(config)
        self.frame_embeddings = nn.Embedding(s["max_frames"], vision_dim) if s["temporal_embeddings"] else None
        self.proj = nn.Linear(s["hidden_size"], llm_dim)

    @classmethod
    def count_tokens(cls, settings: dict, layout: FeatureLayout, num_frames: int) -> int:
        per_call = int(settings["num_queries"])
        return per_call if settings["mode"] == "video" else per_call * num_frames

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self._check_input(features)
        b, t, n, d = features.shape
        if self.frame_embeddings is not None:
            if t > self.settings["max_frames"]:
                raise ConfigError(f"qformer has temporal embeddings for {self.settings['max_frames']} frames, got {t}")
            positions = torch.arange(t, device=features.device)
            features = features + self.frame_embeddings(positions).to(features.dtype)[None, :, None, :]
        if self.settings["mode"] == "video":
            keys = features.reshape(b, t * n, d)
        else:
            keys = features.reshape(b * t, n, d)
        queries = self.queries.expand(keys.shape[0], -1, -1)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=keys).last_hidden_state
        return self.proj(out.to(self.proj.weight.dtype)).reshape(b, -1, self.llm_dim)
