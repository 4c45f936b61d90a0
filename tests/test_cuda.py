"""The model path on a CUDA GPU (skipped without one): the same logits as on the CPU for every projector, batched
greedy decoding equal to one-by-one, bf16 finite, bf16 LoRA training whose loss falls (decoding the clips and from
the feature cache), and the demo size timed in bf16 (printed; run with ``-s`` to see it):

    python -m pytest -q -s tests/test_cuda.py
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import PROJECTOR_SPECS
from tiny import random_frames

from vllm_i2v.models import VideoLLM, VideoLLMConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@pytest.mark.parametrize("projector", [p for p in PROJECTOR_SPECS if p != "slowfast"])
def test_cuda_matches_cpu(build, projector):
    model, processor = build(projector)
    conversations = [
        [{"role": "user", "content": "<video>\nWhat?"}],
        [{"role": "user", "content": "<video>\nDescribe the clip in detail."}],
    ]
    visuals = [[random_frames(2, seed=1)], [random_frames(5, seed=2)]]
    batch = processor(conversations, visuals)
    cpu = model(**batch).logits
    model.cuda()
    gpu = model(**to(batch, "cuda")).logits.cpu()
    assert (gpu - cpu).abs().max().item() < 1e-2
    together = model.generate(**to(batch, "cuda"), max_new_tokens=8, do_sample=False)
    for i, (c, v) in enumerate(zip(conversations, visuals)):
        alone = model.generate(**to(processor([c], [v]), "cuda"), max_new_tokens=8, do_sample=False)
        assert torch.equal(together[i, : alone.shape[1]], alone[0])
    model.to(torch.bfloat16)
    assert torch.isfinite(model(**to(batch, "cuda")).logits).all()
    model.cpu().float()


def test_demo_size_timings_in_bf16():
    text = {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    }  # SmolLM2-135M's shape
    vision = {
        "model_type": "clip_vision_model",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 16,
    }  # CLIP ViT-B/16's shape
    config = VideoLLMConfig(
        vision_config=vision,
        text_config=text,
        projector={"type": "stpool"},
        vision_preprocess={"resize": {"shortest_edge": 224}, "crop": {"height": 224, "width": 224}},
        vision_grid=[14, 14],
        vision_prefix_tokens=1,
        video_token_id=49152,
        image_token_id=49153,
    )
    model = VideoLLM(config).cuda().to(torch.bfloat16).eval()
    tokens = config.num_visual_tokens(16)
    input_ids = torch.cat([torch.full((1, tokens), 49152), torch.randint(0, 49152, (1, 32))], dim=1).cuda()
    inputs = {
        "input_ids": input_ids,
        "pixel_values": torch.randn(16, 3, 224, 224, device="cuda"),
        "frame_counts": torch.tensor([16]),
    }

    def timed(fn, repeats=10):
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats * 1000

    with torch.no_grad():
        tower = timed(lambda: model.vision_features(inputs["pixel_values"]))
        prefill = timed(lambda: model(**inputs))
        generate = timed(lambda: model.generate(**inputs, max_new_tokens=32, min_new_tokens=32, do_sample=False), 3)
    print(
        f"\ndemo size, bf16, 16 frames -> {tokens} visual tokens + 32 text tokens: vision tower {tower:.1f} ms, "
        f"prefill {prefill:.1f} ms, 32 generated tokens {generate:.0f} ms, "
        f"peak memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    )
    assert prefill > 0 and generate > 0


@pytest.mark.parametrize("cached", [False, True], ids=["decoding", "feature-cache"])
def test_bf16_lora_training_learns_on_cuda(saved_model, tmp_path, cached, capsys):
    from vllm_i2v.train.run import run_training
    from vllm_i2v.video.writer import write_video

    (tmp_path / "videos").mkdir()
    colors = {"red": (230, 30, 30), "blue": (40, 80, 230), "green": (30, 200, 30), "yellow": (240, 220, 30)}
    rows = []
    for i in range(16):
        name = list(colors)[i % 4]
        write_video(
            tmp_path / "videos" / f"{i}.mp4", np.broadcast_to(np.array(colors[name], np.uint8), (8, 32, 32, 3)), fps=4
        )
        rows.append(
            {
                "id": str(i),
                "video": f"{i}.mp4",
                "conversations": [
                    {"from": "human", "value": "<video>\nWhat color is the clip?"},
                    {"from": "gpt", "value": f"It is {name}."},
                ],
            }
        )
    (tmp_path / "train.json").write_text(json.dumps(rows))
    out = tmp_path / "out"
    config = {
        "model": str(saved_model),
        "data": {
            "train": str(tmp_path / "train.json"),
            "video_root": str(tmp_path / "videos"),
            "num_frames": 4,
            "sampler": "uniform",
        },
        "trainable": {"projector": True, "llm": "lora"},
        "training": {
            "output_dir": str(out),
            "max_steps": 30,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "logging_steps": 1,
            "save_steps": 30,
            "bf16": True,
        },
    }
    if cached:
        config["feature_cache"] = str(tmp_path / "cache")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    run_training(tmp_path / "train.yaml")
    assert re.search(r"peak GPU memory \(rank 0\): [\d.]+ GiB allocated", capsys.readouterr().out)
    history = json.loads((out / "checkpoint-30" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    print(
        f"\ntrain on cuda, bf16, {'feature cache' if cached else 'decoding'}: loss {np.mean(losses[:5]):.3f} -> "
        f"{np.mean(losses[-5:]):.3f}"
    )
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
