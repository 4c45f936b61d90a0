"""Chat over a video: ``ChatSession`` (video encoded once, KV cache kept across turns) and the interactive CLI."""

from .generation import TurnTimes
from .session import ChatSession

__all__ = ["ChatSession", "TurnTimes"]
