"""Where vllm_i2v keeps what it derives once and reuses (converted GGUF checkpoints): ``$VLLM_I2V_CACHE``, else
``$XDG_CACHE_HOME/vllm_i2v``, else ``~/.cache/vllm_i2v``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root (not created here)."""
    if os.environ.get("VLLM_I2V_CACHE"):
        return Path(os.environ["VLLM_I2V_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vllm_i2v"
