"""Check the core model path on a CUDA GPU: same logits as on the CPU, batched = single greedy decoding, bf16.

Builds tiny models from configs (as the tests do) for every projector, runs them on CPU and GPU, and then
times the demo-sized path (CLIP ViT-B/16-shaped tower, SmolLM2-135M-shaped LLM, random weights) in bf16.
With --train it also runs `vllm-i2v train` on the GPU in bf16 (projector + LLM LoRA, without and with the
feature cache; needs PyAV to write and read the clips) and checks that the loss falls.
Needs no network. Usage: python scripts/check_cuda.py [--train]   (exits 1 on a failed check)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny import random_frames, save_tiny_clip, save_tiny_llm  # noqa: E402

from vllm_i2v.models import VideoLLM, VideoLLMConfig, build_video_llm  # noqa: E402

PROJECTORS = [
    {"type": "stpool"},
    {"type": "adapool", "grid": [2, 2, 2]},
    {"type": "qformer", "hidden_size": 32, "num_heads": 2, "intermediate_size": 64, "num_queries": 4},
    {"type": "mlp", "pool_stride": 2},
]


def to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def check_tiny(root: Path) -> bool:
    ok = True
    vision, llm = save_tiny_clip(root / "clip"), save_tiny_llm(root / "llm")
    conversations = [[{"role": "user", "content": "<video>\nWhat?"}], [{"role": "user", "content": "<video>\nDescribe the clip in detail."}]]
    visuals = [[random_frames(2, seed=1)], [random_frames(5, seed=2)]]
    for projector in PROJECTORS:
        model, processor = build_video_llm({"vision": str(vision), "llm": str(llm), "projector": projector})
        batch = processor(conversations, visuals)
        cpu = model(**batch).logits
        model.cuda()
        gpu = model(**to(batch, "cuda")).logits.cpu()
        diff = (gpu - cpu).abs().max().item()
        together = model.generate(**to(batch, "cuda"), max_new_tokens=8, do_sample=False)
        alone = [model.generate(**to(processor([c], [v]), "cuda"), max_new_tokens=8, do_sample=False) for c, v in zip(conversations, visuals)]
        same = all(torch.equal(together[i, : a.shape[1]], a[0]) for i, a in enumerate(alone))
        model.to(torch.bfloat16)
        bf16 = model(**to(batch, "cuda")).logits
        finite = bool(torch.isfinite(bf16).all())
        passed = diff < 1e-2 and same and finite
        ok &= passed
        print(f"{projector['type']:<8} cpu-vs-cuda max|dlogit| {diff:.2e}  batched==single {same}  bf16 finite {finite}  {'ok' if passed else 'FAIL'}")
    return ok


def time_demo_size() -> None:
    config = VideoLLMConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
        text_config={"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192,
                     "tie_word_embeddings": True},
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
    pixels = torch.randn(16, 3, 224, 224, device="cuda")
    counts = torch.tensor([16])

    def timed(fn, repeats=10):
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats * 1000

    with torch.no_grad():
        print(f"demo size, bf16, 16 frames -> {tokens} visual tokens + 32 text tokens:")
        print(f"  vision tower   {timed(lambda: model.vision_features(pixels)):8.2f} ms")
        print(f"  encode+merge   {timed(lambda: model.embed(input_ids, pixels, counts)):8.2f} ms")
        print(f"  prefill        {timed(lambda: model(input_ids=input_ids, pixel_values=pixels, frame_counts=counts)):8.2f} ms")
        print(f"  generate 32    {timed(lambda: model.generate(input_ids=input_ids, pixel_values=pixels, frame_counts=counts, max_new_tokens=32, min_new_tokens=32, do_sample=False), 3):8.2f} ms")
    print(f"  peak memory    {torch.cuda.max_memory_allocated() / 2**20:8.0f} MiB")


def check_training(root: Path) -> bool:
    """bf16 LoRA training on the GPU, plain and from the feature cache: the loss must fall in both."""
    import json

    import numpy as np
    import yaml

    from vllm_i2v.train.run import run_training
    from vllm_i2v.video.writer import write_video

    model_dir = root / "model"
    vision, llm = save_tiny_clip(root / "clip"), save_tiny_llm(root / "llm")
    model, processor = build_video_llm({"vision": str(vision), "llm": str(llm)})
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    (root / "videos").mkdir()
    colors = {"red": (230, 30, 30), "blue": (40, 80, 230), "green": (30, 200, 30), "yellow": (240, 220, 30)}
    rows = []
    for i in range(16):
        name = list(colors)[i % 4]
        write_video(root / "videos" / f"{i}.mp4", np.broadcast_to(np.array(colors[name], np.uint8), (8, 32, 32, 3)), fps=4)
        rows.append({"id": str(i), "video": f"{i}.mp4", "conversations": [
            {"from": "human", "value": "<video>\nWhat color is the clip?"}, {"from": "gpt", "value": f"It is {name}."}]})
    (root / "train.json").write_text(json.dumps(rows))
    ok = True
    for cached in (False, True):
        out = root / f"out-{'cache' if cached else 'plain'}"
        config = {
            "model": str(model_dir),
            "data": {"train": str(root / "train.json"), "video_root": str(root / "videos"), "num_frames": 4, "sampler": "uniform"},
            "trainable": {"projector": True, "llm": "lora"},
            "training": {"output_dir": str(out), "max_steps": 30, "per_device_train_batch_size": 4, "learning_rate": 1e-2,
                         "lr_scheduler_type": "constant", "logging_steps": 1, "save_steps": 30, "bf16": True,
                         "dataloader_num_workers": 2},
        }
        if cached:
            config["feature_cache"] = str(root / "cache")
        (root / "train.yaml").write_text(yaml.safe_dump(config))
        run_training(root / "train.yaml")
        history = json.loads((out / "checkpoint-30" / "trainer_state.json").read_text())["log_history"]
        losses = [h["loss"] for h in history if "loss" in h]
        passed = np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
        ok &= bool(passed)
        print(f"train on cuda, bf16, {'feature cache' if cached else 'decoding'}: loss {np.mean(losses[:5]):.3f} -> "
              f"{np.mean(losses[-5:]):.3f}  {'ok' if passed else 'FAIL'}", flush=True)
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        ok = check_tiny(Path(tmp))
    time_demo_size()
    if "--train" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            ok &= check_training(Path(tmp))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
