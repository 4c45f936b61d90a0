"""``vllm-i2v encode``'s measurement: one video through every stage of the model path, with shapes and times."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


def encode_stages(
    model_path,
    video,
    question: str = "What happens in this video?",
    frames: int | None = None,
    sampler: str = "uniform",
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    backend: str = "auto",
) -> tuple[dict[str, str], dict[str, float]]:
    """Decode ``video``, load the model, preprocess, run the tower, projector, merge and the LLM's prefill.
    Returns (what each stage produced, as text; seconds per stage). The video is read before the model loads,
    so a bad one fails fast."""
    from ..video import make_sampler, read_video
    from .checkpoint import load_model
    from .processor import VideoLLMProcessor

    times: dict[str, float] = {}

    @contextmanager
    def stage(name):
        began = time.perf_counter()
        yield
        times[name] = time.perf_counter() - began

    processor = VideoLLMProcessor.from_pretrained(model_path)
    config = processor.config
    conversation = [{"role": "user", "content": f"{config.video_token}\n{question}"}]
    max_frames = processor.max_frames(reserved_tokens=len(processor.tokenize(conversation)[0]))
    chosen = make_sampler(sampler, frames or config.num_frames, fps=fps)
    with stage("decode"):
        clip = read_video(video, chosen, start=start, end=end, backend=backend, max_frames=max_frames)
    with stage("load model"):
        model = load_model(model_path)
    with stage("preprocess + tokenize"):
        batch = processor([conversation], [[clip]])
    with torch.no_grad():
        with stage("vision tower"):
            features = model.vision_features(batch["pixel_values"])
        with stage("projector"):
            (visual,) = model.project(features, batch["frame_counts"])
        with stage("merge"):
            embeds = model.merge(batch["input_ids"], [visual])
        with stage("LLM prefill"):
            logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    rows = {
        "video": f"{clip.path} ({clip.backend}, {clip.num_source_frames} frames at {clip.fps:.2f} fps)",
        "frames": f"{tuple(clip.frames.shape)} at t = {', '.join(f'{t:.2f}' for t in clip.timestamps)} s",
        "pixels": f"{tuple(batch['pixel_values'].shape)}",
        "features": f"{tuple(features.shape)} (layer {config.vision_feature_layer}, {config.vision_feature_select})",
        "visual tokens": f"{tuple(visual.shape)} ({config.projector['type']})",
        "LLM input": f"{tuple(embeds.shape)} -> logits {tuple(logits.shape)}",
    }
    return rows, times
