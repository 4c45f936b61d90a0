"""Shared fixtures: tiny checkpoints saved with save_pretrained and loaded back like real ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import transformers

sys.path.insert(0, str(Path(__file__).parent))
transformers.logging.set_verbosity_error()

from tiny import save_tiny_clip, save_tiny_llm  # noqa: E402

QFORMER_TINY = {"type": "qformer", "hidden_size": 32, "num_heads": 2, "intermediate_size": 64, "num_queries": 4}
PROJECTOR_SPECS = {
    "stpool": {"type": "stpool"},
    "adapool": {"type": "adapool", "grid": [2, 2, 2]},
    "qformer": QFORMER_TINY,
    "mlp": {"type": "mlp", "pool_stride": 2},
    "slowfast": {"type": "slowfast", "slow_frames": 2, "slow_grid": [4, 4], "fast_grid": [1, 1]},
}


@pytest.fixture(scope="session")
def parts(tmp_path_factory) -> dict[str, Path]:
    """Saved tiny components: a vision-only CLIP tower, a dual-encoder CLIP, a Llama chat LLM (+ one without a chat
    template)."""
    root = tmp_path_factory.mktemp("parts")
    return {
        "clip": save_tiny_clip(root / "clip"),
        "clip_full": save_tiny_clip(root / "clip_full", full_clip=True),
        "llm": save_tiny_llm(root / "llm"),
        "llm_no_template": save_tiny_llm(root / "llm_no_template", chat_template=None),
    }


@pytest.fixture(scope="session")
def build(parts):
    """``build(projector='stpool', **spec)`` -> (model, processor) from the tiny parts."""
    from vllm_i2v.models import build_video_llm

    def _build(projector: str = "stpool", **spec):
        full = {"vision": str(parts["clip"]), "llm": str(parts["llm"]), "projector": PROJECTOR_SPECS[projector], **spec}
        return build_video_llm(full)

    return _build


@pytest.fixture(scope="session")
def saved_model(build, tmp_path_factory) -> Path:
    """A built tiny VideoLLM (stpool) saved as a checkpoint directory."""
    model, processor = build("stpool")
    out = tmp_path_factory.mktemp("ckpt") / "tiny-stpool"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
