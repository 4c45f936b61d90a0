"""Batched, resumable greedy answers to (video, question) rows.

Rows are sorted by video, then prompt length, and batched: questions about one video share one prefill of it
(:meth:`~vllm_i2v.models.VideoLLM.generate_shared_prefix`), the rest is left padded. Each answer is appended to
a JSONL file as soon as its batch is done (one schema for every task: ``question_id``, ``video``, ``question``,
``answer``, ``pred``, plus the row's other fields), and a rerun skips the ``question_id`` values already there, so
a crash loses at most the batch in flight. With a frozen vision tower, ``feature_cache`` keeps each clip's features
so later runs (and other checkpoints sharing the tower) skip decoding and the tower.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import write_text_atomic
from ..data.formats import resolve_inside
from ..errors import VllmI2VError
from ..video import UniformSampler, read_video


def read_jsonl(path) -> list[dict]:
    """The rows of a JSONL file this package appends to (``[]`` if absent). A line cut short by a crash is
    dropped and the file rewritten atomically without it, so that row is simply produced again."""
    path = Path(path)
    if not path.is_file():
        return []
    rows, kept = [], []
    text = path.read_text()
    lines = text.splitlines()
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "question_id" in row:
            rows.append(row)
            kept.append(line)
    if len(kept) != len(lines) or (lines and not text.endswith("\n")):
        write_text_atomic(path, "".join(line + "\n" for line in kept))
    return rows


def append_jsonl(file, rows: list[dict]) -> None:
    """Append ``rows`` to an open JSONL file and make them durable (flush + fsync) before returning."""
    for row in rows:
        file.write(json.dumps(row, ensure_ascii=False) + "\n")
    file.flush()
    os.fsync(file.fileno())


@torch.no_grad()
def predict(
    model,
    processor,
    rows: list[dict],
    video_root,
    out_path,
    batch_size: int = 16,
    num_frames: int | None = None,
    max_new_tokens: int = 16,
    feature_cache=None,
    decode_timeout: float | None = 60.0,
    prompt: str = "{question}",
    generation: dict | None = None,
) -> dict:
    """Answer ``rows`` (dicts with ``question_id``, ``video``, ``question``, ``answer``) into ``out_path`` (JSONL).
    ``prompt`` is the user turn after the video, with ``{question}`` (and any other row field) filled in;
    ``generation``: more ``generate`` arguments (decoding is greedy).

    Returns counts: ``predicted`` now, ``skipped`` (already in the file), ``missing`` (videos that could not
    be read; their ids are listed under ``missing_videos``).
    """
    from ..train.feature_cache import FeatureCache, tower_fingerprint

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = {str(row["question_id"]) for row in read_jsonl(out_path)}
    todo = [row for row in rows if str(row["question_id"]) not in done]
    sampler = UniformSampler(num_frames or model.config.num_frames)
    cache = FeatureCache(feature_cache, tower_fingerprint(model), sampler) if feature_cache else None
    model.eval()
    stats = {"predicted": 0, "skipped": len(rows) - len(todo), "missing": 0, "missing_videos": []}

    def tower(clips: dict[Path, torch.Tensor]) -> dict[Path, torch.Tensor]:
        """Features of the decoded ``clips`` (video -> frames), their frames through the tower in one call."""
        if not clips:
            return {}
        pixels = torch.cat([processor.frame_preprocessor(frames) for frames in clips.values()])
        features = dict(zip(clips, model.vision_features(pixels).split([len(f) for f in clips.values()])))
        if cache:
            for video, clip_features in features.items():
                cache.save(video, clip_features)
        return features

    def conversation(row: dict) -> list[dict]:
        return [{"role": "user", "content": f"{model.config.video_token}\n{prompt.format(**row)}"}]

    # Questions about one video side by side: a batch of them prefills the video once (generate_shared_prefix).
    todo.sort(key=lambda row: (str(row["video"]), len(row["question"])))
    with open(out_path, "a") as out, tqdm(total=len(todo), desc="answering", dynamic_ncols=True) as bar:
        for start in range(0, len(todo), batch_size):
            placed, features, decoded = [], {}, {}  # this batch's (row, video) pairs; features; new clips
            for row in todo[start : start + batch_size]:
                try:
                    video = resolve_inside(Path(video_root), row["video"], f"question {row['question_id']}")
                    if video not in features and video not in decoded:
                        cached = cache.load(video) if cache else None
                        if cached is not None:
                            features[video] = cached
                        else:
                            decoded[video] = read_video(video, sampler, timeout=decode_timeout).frames
                except VllmI2VError as exc:
                    stats["missing"] += 1
                    stats["missing_videos"].append(f"{row['video']}: {exc}")
                    continue
                placed.append((row, video))
            features.update(tower(decoded))
            counts = [f.shape[0] for f in features.values()]
            tokens = dict(zip(features, model.project(torch.cat(list(features.values())), counts))) if features else {}
            prompts = [
                processor.expanded_ids(conversation(row), [features[video].shape[0]])[0] for row, video in placed
            ]
            visual = [[tokens[video]] for _, video in placed]
            batch = [row for row, _ in placed]
            if batch:
                new_tokens = model.generate_shared_prefix(
                    prompts,
                    visual,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=processor.tokenizer.pad_token_id,
                    **(generation or {}),
                )
                answers = processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                append_jsonl(out, [{**row, "pred": answer.strip()} for row, answer in zip(batch, answers)])
                stats["predicted"] += len(batch)
            bar.update(len(todo[start : start + batch_size]))
    return stats
