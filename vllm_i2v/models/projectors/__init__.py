"""Temporal projectors, one per file, chosen by ``projector: {type: NAME, ...}`` in the model config."""

from __future__ import annotations

from ...errors import ConfigError
from .adapool import AdaptivePooling
from .base import FeatureLayout, TemporalProjector
from .mlp import FrameMLP
from .qformer import QFormerProjector
from .slowfast import SlowFastPooling
from .stpool import SpatioTemporalPooling

DEFAULT_PROJECTOR = {"type": "stpool"}  # a build spec or config that names none gets this one
PROJECTORS: dict[str, type[TemporalProjector]] = {
    cls.name: cls for cls in (SpatioTemporalPooling, AdaptivePooling, QFormerProjector, FrameMLP, SlowFastPooling)
}


def projector_class(settings: dict) -> type[TemporalProjector]:
    """The projector class named by ``settings['type']``; an unknown name lists the known ones."""
    name = settings.get("type")
    if name not in PROJECTORS:
        raise ConfigError(f"unknown projector {name!r}; known projectors: {', '.join(PROJECTORS)}")
    return PROJECTORS[name]


def build_projector(settings: dict, layout: FeatureLayout, vision_dim: int, llm_dim: int) -> TemporalProjector:
    """Instantiate the projector named in ``settings``."""
    return projector_class(settings)(settings, layout, vision_dim, llm_dim)


__all__ = [
    "DEFAULT_PROJECTOR",
    "PROJECTORS",
    "FeatureLayout",
    "TemporalProjector",
    "build_projector",
    "projector_class",
]
