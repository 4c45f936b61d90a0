"""One answer over a conversation whose keys and values may already be cached: the generation loop that the chat CLI,
the web page and the HTTP API all use.

A conversation's prompt is a sequence of token ids in which each visual placeholder stands for one visual token.
Its *key* is that sequence with each placeholder replaced by ``(content hash, slot)``, so two prompts about
different videos never look alike. :func:`continue_conversation` crops a KV cache to the longest prefix its key
shares with the new prompt's and lets the LLM's ``generate`` compute only the rest; :class:`PrefixCachePool` keeps
the caches of recent conversations (bounded in number and bytes) for requests that arrive whole each turn.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList, TextStreamer

from ..models.processor import common_prefix_length


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
            f"first token {self.first_token:.2f}s, generate {self.generate:.2f}s "
            f"({self.new_tokens} tokens, {rate:.1f} tokens/s)"
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


class CancelCriteria(StoppingCriteria):
    """Stops generation when ``event`` is set (Ctrl-C in the CLI, a client that went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def prompt_key(ids: list[int], placeholder_ids, visual_keys: list[str], visual_lengths: list[int]) -> list:
    """``ids`` with the visual-token slots named by what fills them: the k-th slot of visual input ``i`` becomes
    ``(visual_keys[i], k)``. Prompts whose keys share a prefix share those keys and values."""
    key, inputs, slot = [], iter(zip(visual_keys, visual_lengths)), 0
    current = None
    for token in ids:
        if token in placeholder_ids:
            if current is None or slot == current[1]:
                current, slot = next(inputs), 0
            key.append((current[0], slot))
            slot += 1
        else:
            key.append(token)
    return key


@dataclass
class Reply:
    """An answer: its text, its tokens, why it ended, and the times of its stages."""

    text: str
    new_ids: list[int]
    finish_reason: str  # "stop" (end of turn or a stop string), "length" (max_new_tokens), "cancelled"
    times: TurnTimes = field(default_factory=TurnTimes)


def continue_conversation(
    model,
    processor,
    ids: list[int],
    visual_tokens: list[torch.Tensor],
    cache: DynamicCache,
    cached_key: list,
    key: list,
    max_new_tokens: int,
    generation: dict | None = None,
    on_text=None,
    cancel: threading.Event | None = None,
    stop: list[str] | None = None,
    times: TurnTimes | None = None,
) -> tuple[Reply, list]:
    """Answer the prompt ``ids`` (its visual slots filled by ``visual_tokens``, its key ``key``), reusing the keys and
    values ``cache`` holds for ``cached_key``: the cache is cropped to their common prefix and extended in place.
    Returns the reply and the key ``cache`` now holds. If generation fails, ``cache`` must be dropped."""
    common = min(common_prefix_length(cached_key, key), len(ids) - 1)  # at least one token to prefill
    stale = cache.get_seq_length() - common
    if stale > 0:
        cache.crop(-stale)  # keep only the keys and values of the shared prefix
    input_ids = torch.tensor([ids], device=model.device)
    embeds = model.merge(input_ids, visual_tokens)
    times = times or TurnTimes()
    times.prefill_tokens = len(ids) - common
    cancel = cancel or threading.Event()
    streamer = TimedTextStreamer(processor.tokenizer, on_text, skip_special_tokens=True)
    extra = {"stop_strings": stop, "tokenizer": processor.tokenizer} if stop else {}
    started = time.perf_counter()
    with torch.no_grad():
        out = model.language_model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(input_ids),
            cache=cache,
            max_new_tokens=max_new_tokens,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([CancelCriteria(cancel)]),
            pad_token_id=processor.tokenizer.pad_token_id,
            **{"do_sample": False, **(generation or {}), **extra},
        )
    times.generate = time.perf_counter() - started
    times.first_token = (streamer.first_token_at or time.perf_counter()) - started
    new_ids = out[0].tolist()
    times.new_tokens = len(new_ids)
    text = "".join(streamer.pieces).strip()
    ended = new_ids and new_ids[-1] in _end_ids(model, processor)
    if cancel.is_set():
        finish = "cancelled"
    elif stop and any(s in text for s in stop):
        finish, text = "stop", _cut_at_stop(text, stop)
    else:
        finish = "stop" if ended or len(new_ids) < max_new_tokens else "length"
    # the last token's keys and values are not computed yet
    return Reply(text, new_ids, finish, times), key + new_ids[:-1]


def _end_ids(model, processor) -> set[int]:
    eos = model.language_model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids | ({processor.tokenizer.eos_token_id} if processor.tokenizer.eos_token_id is not None else set())


def _cut_at_stop(text: str, stop: list[str]) -> str:
    """The text up to the first stop string (which OpenAI's API leaves out of the answer)."""
    cut = min((text.find(s) for s in stop if s in text), default=len(text))
    return text[:cut].rstrip()


def cache_bytes(cache: DynamicCache) -> int:
    """Bytes of the keys and values a cache holds."""
    total = 0
    for layer in getattr(cache, "layers", ()):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


class PrefixCachePool:
    """The KV caches of recent conversations, least recently used dropped first beyond ``max_entries`` or
    ``max_bytes``. :meth:`take` hands out the cache whose key shares the longest prefix with a new prompt's (or a
    fresh one); :meth:`put` returns it, extended, under the conversation's new key. Callers serialize use (one
    model, one generation at a time)."""

    def __init__(self, max_entries: int = 16, max_bytes: int = 2**30):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.entries: OrderedDict[int, tuple[list, DynamicCache]] = OrderedDict()
        self._next = 0

    def take(self, key: list) -> tuple[list, DynamicCache]:
        """(cached key, cache) sharing the longest prefix with ``key``, removed from the pool; ([], fresh) if none."""
        best, shared = None, 0
        for name, (cached, _) in self.entries.items():
            length = common_prefix_length(cached, key)
            if length > shared:
                best, shared = name, length
        if best is None:
            return [], DynamicCache()
        return self.entries.pop(best)

    def put(self, key: list, cache: DynamicCache) -> None:
        self.entries[self._next] = (key, cache)
        self._next += 1
        while len(self.entries) > self.max_entries or (
            len(self.entries) > 1 and sum(cache_bytes(c) for _, c in self.entries.values()) > self.max_bytes
        ):
            self.entries.popitem(last=False)

    def nbytes(self) -> int:
        return sum(cache_bytes(c) for _, c in self.entries.values())
