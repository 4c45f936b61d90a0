"""``VideoChatDataset``: dataset rows -> encoded training rows (frames decoded in the dataloader workers)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import VllmI2VError
from ..video import FrameSampler, read_video
from .formats import DataError, Sample, media_file
from .validate import check_sample

logger = logging.getLogger(__name__)


def usable_samples(
    samples: list[Sample], video_root: Path | None, strict: bool = False, image_root: Path | None = None
) -> list[Sample]:
    """The samples that pass :func:`check_sample`; bad ones are counted and logged, or with ``strict`` the first
    one is a :class:`DataError`."""
    good, bad = [], 0
    for sample in samples:
        problems = check_sample(sample, video_root, image_root=image_root)
        if not problems:
            good.append(sample)
            continue
        if strict:
            raise DataError(f"{sample.source}: {'; '.join(map(str, problems))}")
        bad += 1
        if bad <= 5:
            logger.warning("skipping %s: %s", sample.source, "; ".join(map(str, problems)))
    if bad:
        logger.warning(
            "skipped %d of %d rows that cannot be used (vllm-i2v data check lists them all)", bad, len(samples)
        )
    if not good:
        raise DataError("no usable rows in the dataset")
    return good


class VideoChatDataset(torch.utils.data.Dataset):
    """Decodes each row's video with ``sampler`` and encodes the conversation with labels on assistant turns.

    ``independent_turns``: each exchange of a multi-turn row is trained as its own one-question conversation
    (:meth:`VideoLLMProcessor.branch_ids`). A row whose video fails to decode, or whose decoder hangs past
    ``decode_timeout`` seconds, is logged and replaced by the next row (a corrupt file costs one warning, not the
    run); ``strict`` makes it an error. Paths are relative to ``video_root``, an image's to ``image_root`` when
    one is given.
    """

    def __init__(
        self,
        samples: list[Sample],
        processor,
        video_root,
        sampler: FrameSampler,
        strict: bool = False,
        max_frames: int | None = None,
        decode_timeout: float | None = 60.0,
        feature_cache=None,
        independent_turns: bool = False,
        image_root=None,
    ):
        self.video_root = Path(video_root) if video_root is not None else None
        self.image_root = Path(image_root) if image_root is not None else None
        self.samples = usable_samples(samples, self.video_root, strict, self.image_root)
        self.processor = processor
        self.sampler = sampler
        self.strict = strict
        self.max_frames = max_frames
        self.decode_timeout = decode_timeout
        self.feature_cache = feature_cache  # a train.feature_cache.FeatureCache: read features, decode nothing
        self.independent_turns = independent_turns  # see VideoLLMProcessor.branch_ids

    def __len__(self) -> int:
        return len(self.samples)

    def lengths(self) -> list[int]:
        """Approximate token length of each row (text characters / 4 + visual tokens), for length grouping."""
        config = self.processor.config
        visual = {
            "video": config.num_visual_tokens(getattr(self.sampler, "num_frames", 8)),
            "image": config.num_visual_tokens(1),
            None: 0,
        }
        return [sum(len(m["content"]) for m in s.messages) // 4 + visual[s.media] for s in self.samples]

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.samples)):
            sample = self.samples[(index + attempt) % len(self.samples)]
            try:
                return self.encode(sample)
            except VllmI2VError as exc:
                if self.strict:
                    raise
                logger.warning("skipping %s: %s", sample.source, exc)
        raise DataError("no row of the dataset could be decoded")

    def video_path(self, sample: Sample) -> Path:
        """The file of a row's video or image (inside its root when one is set)."""
        return media_file(sample, self.video_root, self.image_root)

    def encode(self, sample: Sample) -> dict:
        """One row: decoded frames (or cached vision features), tokens and labels."""
        visuals, features = [], None
        if sample.visual is not None:
            path = self.video_path(sample)
            if self.feature_cache is not None:
                cached = self.feature_cache.load(path, image=sample.image is not None)
                if cached is None:
                    raise DataError(f"{sample.source}: no cached vision features for {path} (its extraction failed)")
                features = [cached]
            elif sample.video is not None:
                clip = read_video(path, self.sampler, max_frames=self.max_frames, timeout=self.decode_timeout)
                visuals.append(clip.frames)
            else:
                visuals.append(read_video(path, timeout=self.decode_timeout).frames[0])
        row = self.processor.encode(
            sample.messages,
            visuals,
            add_generation_prompt=False,
            with_labels=True,
            name=sample.source,
            features=features,
            independent_turns=self.independent_turns,
        )
        if not any(label != -100 for label in row["labels"]):
            raise DataError(f"{sample.source}: no assistant tokens left to train on")
        return row
