"""A cache of vision-tower features for training with a frozen tower (Video-ChatGPT pre-extracts its CLIP
features the same way): each video is decoded and encoded once, then every epoch reads its features.

Entries are keyed by the video's identity (resolved path, size, modification time), the sampling settings
and the tower (config, feature layer, preprocessing and a digest of its weights), so a changed video, sampler
or tower never reads stale features. Each entry is one safetensors file written atomically; ranks extract
disjoint shares of the dataset into the same folder and read each other's entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..atomic import atomic_path
from ..errors import ConfigError, VllmI2VError
from ..video import FrameSampler, SegmentSampler, read_video

logger = logging.getLogger(__name__)


def tower_fingerprint(model) -> str:
    """A digest of what determines the tower's features: config, layer, CLS handling, preprocessing, weights
    (not where the tower was loaded from: the same tower under another path shares its cache)."""
    digest = hashlib.sha256()
    config = model.config
    vision = {key: value for key, value in config.vision_config.to_dict().items() if key != "_name_or_path"}
    described = {
        "vision": vision,
        "layer": config.vision_feature_layer,
        "select": config.vision_feature_select,
        "preprocess": config.vision_preprocess,
    }
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for name, param in sorted(model.vision_tower.named_parameters()):
        digest.update(name.encode())
        digest.update(
            param.detach().flatten()[:1024].float().cpu().numpy().tobytes()
        )  # a prefix of every tensor suffices
    return digest.hexdigest()[:16]


def sampler_description(sampler: FrameSampler) -> str:
    if isinstance(sampler, SegmentSampler) and sampler.random_offset:
        raise ConfigError(
            "a feature cache needs the same frames every epoch: use sampler uniform or fps, or segments with "
            "data.random_offset: false"
        )
    return repr(sampler)


class FeatureCache:
    """Features ``(T, N, D)`` of one video under one sampler and tower, in ``directory``."""

    def __init__(self, directory, fingerprint: str, sampler: FrameSampler, dtype=torch.float16):
        self.directory = Path(directory) / fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sampling = sampler_description(sampler)
        self.sampler = sampler
        self.dtype = dtype

    def path(self, video: Path, image: bool = False) -> Path:
        stat = video.stat()
        key = f"{video.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{'image' if image else self.sampling}"
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"

    def load(self, video: Path, image: bool = False) -> torch.Tensor | None:
        path = self.path(video, image)
        return load_file(str(path))["features"].float() if path.is_file() else None

    def save(self, video: Path, features: torch.Tensor, image: bool = False) -> None:
        with atomic_path(self.path(video, image)) as tmp:
            save_file({"features": features.detach().to("cpu", self.dtype).contiguous()}, str(tmp))


@torch.no_grad()
def extract_features(
    model, dataset, cache: FeatureCache, rank: int = 0, world_size: int = 1, decode_timeout: float | None = 60.0
) -> dict:
    """Fill ``cache`` for this rank's share of ``dataset``'s videos (every ``world_size``-th, from ``rank``).

    Videos already cached are skipped, so an interrupted extraction resumes where it stopped. Returns counts.
    """
    entries = sorted({(dataset.video_path(s), s.image is not None) for s in dataset.samples if s.visual is not None})
    mine = entries[rank::world_size]
    stats = {"videos": len(entries), "extracted": 0, "cached": 0, "failed": 0}
    preprocess = dataset.processor.frame_preprocessor
    was_training = model.training
    model.eval()
    for video, image in tqdm(mine, desc="vision features", disable=rank != 0, dynamic_ncols=True):
        if cache.path(video, image).is_file():
            stats["cached"] += 1
            continue
        try:
            sampler, max_frames = (None, 1) if image else (cache.sampler, dataset.max_frames)
            clip = read_video(video, sampler, max_frames=max_frames, timeout=decode_timeout)
        except VllmI2VError as exc:
            logger.warning("feature cache: skipping %s", exc)
            stats["failed"] += 1
            continue
        cache.save(video, model.vision_features(preprocess(clip.frames)), image)
        stats["extracted"] += 1
    model.train(was_training)
    return stats
