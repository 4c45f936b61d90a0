"""``ChatSession``: multi-turn chat over one video that never re-reads it.

The video is decoded and encoded into visual tokens once per :meth:`ChatSession.set_video`. Every turn renders
the whole conversation with the chat template, finds the longest prefix whose keys and values are already in the
session's KV cache (the video, earlier questions and answers), crops the cache to it and lets the LLM's
``generate`` compute only the rest. Answers equal those of a fresh run over the whole conversation.

A model trained on each question as its own conversation (``config.independent_turns``) never saw an earlier turn in
its prompt: by default its session asks each question about the video alone, as it was trained (the transcript still
holds every turn), and each turn prefills only its question after the cached video.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import DynamicCache

from ..atomic import write_text_atomic
from ..video import UniformSampler, read_video
from .generation import TurnTimes, continue_conversation, prompt_key


@dataclass
class ChatSession:
    """One conversation about (at most) one video with a loaded model; see the module docstring."""

    model: object
    processor: object
    num_frames: int = 8
    max_new_tokens: int = 256
    generation: dict = field(default_factory=lambda: {"do_sample": False})
    system: str | None = None
    independent_turns: bool | None = None  # None: as the model was trained (config.independent_turns)

    def __post_init__(self):
        if self.independent_turns is None:
            self.independent_turns = self.model.config.independent_turns
        self.video: str | None = None
        self.video_label: str | None = None
        self.visual_tokens: list[torch.Tensor] = []
        self.frame_count = 0
        self.messages: list[dict] = []
        self.cache = DynamicCache()
        self.cached_key: list = []
        self.cancel = threading.Event()
        self.pending = TurnTimes()

    # --- state ------------------------------------------------------------------------------------------

    def set_video(self, path, label: str | None = None) -> None:
        """Decode and encode ``path`` once, and start a new conversation about it. ``label`` is how transcripts
        name the video (default: the path; the web demo gives the user's own file name, not its server path)."""
        self._encode(path)
        self.video_label = label or str(path)
        self.reset()

    def _encode(self, path) -> None:
        started = time.perf_counter()
        budget = self.processor.max_frames(reserved_tokens=self.max_new_tokens + 256)
        clip = read_video(path, UniformSampler(self.num_frames), max_frames=budget)
        decoded = time.perf_counter()
        pixels = self.processor.frame_preprocessor(clip.frames)
        with torch.no_grad():
            tokens = self.model.encode_visual(pixels, [len(clip.frames)])
        self.video, self.visual_tokens, self.frame_count = str(path), tokens, len(clip.frames)
        self.pending = TurnTimes(decode=decoded - started, encode=time.perf_counter() - decoded)

    def reset(self) -> None:
        """Forget the conversation (the video's visual tokens are kept)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self._drop_cache()

    def _drop_cache(self) -> None:
        self.cache = DynamicCache()
        self.cached_key = []

    def set_frames(self, num_frames: int) -> None:
        """Sample ``num_frames`` frames from now on. The current video is re-encoded and the conversation kept:
        the next turn prefills it again over the new visual tokens."""
        self.num_frames = num_frames
        if self.video:
            self._encode(self.video)
            self._drop_cache()

    def transcript(self) -> dict:
        return {"video": self.video_label, "num_frames": self.num_frames, "messages": list(self.messages)}

    def save(self, path) -> Path:
        """Write the transcript as JSON (atomically)."""
        return write_text_atomic(path, json.dumps(self.transcript(), indent=1, ensure_ascii=False) + "\n")

    # --- a turn -----------------------------------------------------------------------------------------

    def ask(self, question: str, on_text=None) -> tuple[str, TurnTimes]:
        """Answer ``question``; ``on_text(piece)`` receives the answer as it streams. Returns (answer, times).

        The first question after :meth:`set_video` or :meth:`reset` carries the video placeholder; with
        ``independent_turns`` every question does, asked after the system message alone.
        """
        token = self.model.config.video_token
        earlier = [m for m in self.messages if m["role"] == "system"] if self.independent_turns else self.messages
        first = self.video is not None and not any(token in str(m["content"]) for m in earlier)
        asked = {"role": "user", "content": f"{token}\n{question}" if first else question}
        messages = earlier + [asked]
        frame_counts = [self.frame_count] if self.video else []
        ids, _ = self.processor.expanded_ids(messages, frame_counts, add_generation_prompt=True)
        visual = self.visual_tokens if self.video else []
        key = prompt_key(ids, self.model.visual_placeholder_ids, ["video"] * len(visual), [len(t) for t in visual])
        times, self.pending = self.pending, TurnTimes()
        self.cancel.clear()
        try:
            reply, self.cached_key = continue_conversation(
                self.model,
                self.processor,
                ids,
                visual,
                self.cache,
                self.cached_key,
                key,
                self.max_new_tokens,
                self.generation,
                on_text,
                self.cancel,
                times=times,
            )
        except BaseException:
            self._drop_cache()  # the cache may hold half a turn
            raise
        self.messages = self.messages + [asked, {"role": "assistant", "content": reply.text}]
        return reply.text, reply.times
