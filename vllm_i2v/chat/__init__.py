"""Chat over a video: ``ChatSession`` (video encoded once, KV cache kept across turns) and the interactive CLI."""

from .session import ChatSession, TurnTimes

__all__ = ["ChatSession", "TurnTimes"]
