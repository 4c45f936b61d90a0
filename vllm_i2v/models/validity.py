"""One check that a folder is a loadable VideoLLM checkpoint, run before anything is loaded from it.

Every loader (:func:`vllm_i2v.models.load_model`, the processor) calls :func:`check_checkpoint`, so every command
that reads a model answers a broken one with one line naming the file and the cause: no folder, no or invalid
``config.json``, another kind of model, missing weights, a safetensors file that is truncated or whose header is
damaged, a trainable-only checkpoint whose base or bundle parts are missing. Only headers are read (milliseconds).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ..errors import CheckpointError

TRAINABLE_WEIGHTS = "trainable.safetensors"
TRAINABLE_INDEX = "trainable.json"
FULL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def read_json(path: Path, what: str) -> dict:
    """A JSON object file, or a :class:`CheckpointError` naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: not a {what} (no {path.name})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return value


def check_safetensors(path: Path) -> None:
    """The file exists and is whole: its header parses and its tensors' bytes are all there."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated or empty safetensors file ({size} bytes)")
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                raise CheckpointError(f"{path}: damaged or truncated safetensors header ({size} bytes in all)")
            header = json.loads(f.read(length))
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: weights file {path.name} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: damaged safetensors header (not JSON)") from None
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        raise CheckpointError(f"{path}: truncated ({size} of {needed} bytes)")


def check_checkpoint(path) -> Path:
    """Raise :class:`CheckpointError` unless ``path`` is a VideoLLM checkpoint whose files are all there and whole
    (full, trainable-only with its chain of bases, or a parts bundle). Returns the path."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: not a VideoLLM checkpoint ({'no such folder' if not path.exists() else 'not a folder'})"
        )
    config = read_json(path / "config.json", "VideoLLM checkpoint")
    if config.get("model_type") != "vllm_i2v":
        raise CheckpointError(
            f"{path}: not a VideoLLM checkpoint (config.json is a {config.get('model_type')!r} model)"
        )
    if (path / TRAINABLE_INDEX).is_file():
        index = read_json(path / TRAINABLE_INDEX, "trainable-only checkpoint")
        check_safetensors(path / TRAINABLE_WEIGHTS)
        if "base_parts" in index:
            tower = path / str(index["base_parts"].get("vision", ""))
            read_json(tower / "config.json", "vision tower")
            check_safetensors(tower / "model.safetensors")
        else:
            base = index.get("base_checkpoint")
            if not base or not Path(base).is_dir():
                raise CheckpointError(f"{path}: its base checkpoint {base} is missing (trainable.json names it)")
            check_checkpoint(base)
        return path
    if (path / FULL_WEIGHTS[0]).is_file():
        check_safetensors(path / FULL_WEIGHTS[0])
    elif (path / FULL_WEIGHTS[1]).is_file():
        shards = read_json(path / FULL_WEIGHTS[1], "sharded checkpoint").get("weight_map", {})
        for shard in sorted(set(shards.values())):
            check_safetensors(path / shard)
    else:
        raise CheckpointError(
            f"{path}: not a VideoLLM checkpoint (no {' or '.join(FULL_WEIGHTS)} or {TRAINABLE_WEIGHTS})"
        )
    return path
