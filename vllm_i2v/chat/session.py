"""``ChatSession``: multi-turn chat over one video that never re-reads it.

The video is decoded and encoded into visual tokens once per :meth:`ChatSession.set_video`. Every turn renders
the whole conversation with the chat template, finds the longest prefix whose keys and values are already in the
session's KV cache (the video, earlier questions and answers), crops the cache to it and lets the LLM's
``generate`` compute only the rest. Answers equal those of a fresh run over the whole conversation.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList, TextStreamer

from ..atomic import write_text_atomic
from ..models.processor import common_prefix_length
from ..video import UniformSampler, read_video


@dataclass
class TurnTimes:
    """Seconds spent per stage of one answer, and its speed."""

    decode: float = 0.0
    encode: float = 0.0
    prefill_tokens: int = 0
    generate: float = 0.0
    new_tokens: int = 0
    first_token: float = 0.0

    def describe(self) -> str:
        rate = self.new_tokens / self.generate if self.generate else 0.0
        return (
            f"decode {self.decode:.2f}s, encode {self.encode:.2f}s, prefill {self.prefill_tokens} tokens, "
            f"first token {self.first_token:.2f}s, generate {self.generate:.2f}s ({self.new_tokens} tokens, {rate:.1f} tokens/s)"
        )


class TimedTextStreamer(TextStreamer):
    """Hands the answer's text to ``on_text`` as it is generated (on the generating thread; a piece ends at a
    word boundary) and notes when the first new token arrived (``first_token_at``, perf_counter)."""

    def __init__(self, tokenizer, on_text=None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt=True, **decode_kwargs)
        self.on_text = on_text
        self.pieces: list[str] = []
        self.first_token_at: float | None = None

    def put(self, value):
        if not self.next_tokens_are_prompt and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if text:
            self.pieces.append(text)
            if self.on_text:
                self.on_text(text)


class _Cancel(StoppingCriteria):
    """Stops generation when the session's cancel event is set (Ctrl-C in the CLI)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass
class ChatSession:
    """One conversation about (at most) one video with a loaded model; see the module docstring."""

    model: object
    processor: object
    num_frames: int = 8
    max_new_tokens: int = 256
    generation: dict = field(default_factory=lambda: {"do_sample": False})
    system: str | None = None

    def __post_init__(self):
        self.video: str | None = None
        self.video_label: str | None = None
        self.visual_tokens: list[torch.Tensor] = []
        self.frame_count = 0
        self.messages: list[dict] = []
        self.cache = DynamicCache()
        self.cached_ids: list[int] = []
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
        self.cached_ids = []

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

        The first question after :meth:`set_video` or :meth:`reset` carries the video placeholder.
        """
        token = self.model.config.video_token
        first = self.video is not None and not any(token in str(m["content"]) for m in self.messages)
        messages = self.messages + [{"role": "user", "content": f"{token}\n{question}" if first else question}]
        frame_counts = [self.frame_count] if self.video else []
        ids, _ = self.processor.expanded_ids(messages, frame_counts, add_generation_prompt=True)
        common = min(common_prefix_length(self.cached_ids, ids), len(ids) - 1)  # at least one token to prefill
        stale = self.cache.get_seq_length() - common
        if stale > 0:
            self.cache.crop(-stale)  # keep only the keys and values of the shared prefix
        input_ids = torch.tensor([ids], device=self.model.device)
        embeds = self.model.merge(input_ids, self.visual_tokens if self.video else [])
        times, self.pending = self.pending, TurnTimes()
        times.prefill_tokens = len(ids) - common
        self.cancel.clear()
        streamer = TimedTextStreamer(self.processor.tokenizer, on_text, skip_special_tokens=True)
        started = time.perf_counter()
        try:
            with torch.no_grad():
                out = self.model.language_model.generate(
                    inputs_embeds=embeds,
                    attention_mask=torch.ones_like(input_ids),
                    cache=self.cache,
                    max_new_tokens=self.max_new_tokens,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Cancel(self.cancel)]),
                    pad_token_id=self.processor.tokenizer.pad_token_id,
                    **self.generation,
                )
        except BaseException:
            self.cached_ids, self.cache = [], DynamicCache()  # the cache may hold half a turn
            raise
        times.generate = time.perf_counter() - started
        times.first_token = (streamer.first_token_at or time.perf_counter()) - started
        new_ids = out[0].tolist()
        times.new_tokens = len(new_ids)
        answer = "".join(streamer.pieces).strip()
        self.cached_ids = ids + new_ids[:-1]  # the last token's keys and values are not computed yet
        self.messages = messages + [{"role": "assistant", "content": answer}]
        return answer, times
