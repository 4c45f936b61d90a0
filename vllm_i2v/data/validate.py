"""Checks on dataset rows, shared by ``vllm-i2v data check`` and training (which skips or stops on bad rows)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .formats import DataError, Sample, media_file

PLACEHOLDERS = ("<video>", "<image>")


class Problem(NamedTuple):
    """A reason a row cannot be used: its ``kind`` (counted in a check's summary) and the phrase shown."""

    kind: str
    text: str

    def __str__(self) -> str:
        return self.text


def check_sample(
    sample: Sample, video_root: Path | None, for_training: bool = True, image_root: Path | None = None
) -> list[Problem]:
    """Problems of one sample (empty when it is usable), each a phrase without the location; its file is looked
    for under its root (:func:`~vllm_i2v.data.formats.media_file`) when one is set."""
    problems = []
    messages = sample.messages
    if not messages:
        return [Problem("no turns", "no turns")]
    for n, message in enumerate(messages):
        if not str(message.get("content", "")).strip():
            problems.append(Problem("empty turn", f"turn {n + 1} ({message['role']}) is empty"))
    dialogue = messages[1:] if messages[0]["role"] == "system" else messages
    expected = ["user", "assistant"] * len(dialogue)
    if [m["role"] for m in dialogue] != expected[: len(dialogue)]:
        problems.append(Problem("turn order", "turns do not alternate user/assistant"))
    elif for_training and dialogue and dialogue[-1]["role"] != "assistant":
        problems.append(Problem("nothing to train on", "the last turn is not an assistant reply (nothing to train on)"))
    text = "".join(str(m.get("content", "")) for m in messages)
    counts = {p: text.count(p) for p in PLACEHOLDERS}
    wanted = {"<video>": int(sample.video is not None), "<image>": int(sample.image is not None)}
    for placeholder, count in counts.items():
        if count != wanted[placeholder]:
            has = "a" if wanted[placeholder] else "no"
            problems.append(
                Problem(
                    "placeholder count", f"{count} {placeholder} placeholders for a row with {has} {placeholder[1:-1]}"
                )
            )
    if sample.visual is not None and (video_root is not None or image_root is not None):
        try:
            media_file(sample, video_root, image_root)
        except DataError as exc:
            problems.append(Problem(f"{sample.media} path", str(exc).removeprefix(f"{sample.source}: ")))
    return problems


def check_length(sample: Sample, processor, num_frames: int) -> Problem | None:
    """A problem if the sample, with ``num_frames`` frames of visual tokens, exceeds the LLM's context."""
    context = processor.config.context_length
    if not context:
        return None
    total = len(processor.tokenize(sample.messages, add_generation_prompt=False)[0])
    if sample.visual is not None:  # the placeholder token becomes the visual tokens
        total += processor.config.num_visual_tokens(num_frames if sample.video is not None else 1) - 1
    if total > context:
        return Problem(
            "too long", f"{total} tokens with {num_frames} frames of visual tokens, over the LLM's context of {context}"
        )
    return None
