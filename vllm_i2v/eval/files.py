"""The repository's ``eval/`` folder: task files and judge prompts, found by path or by name."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..models.spec import load_yaml

EVAL_DIR = Path(__file__).resolve().parents[2] / "eval"


def load_named_yaml(name_or_path: str, folder: str, required: set[str]) -> tuple[Path, dict]:
    """``(path, contents)`` of a YAML file given by path or by name in ``eval/<folder>/``, with ``required`` keys."""
    path = Path(name_or_path)
    if not path.is_file():
        path = EVAL_DIR / folder / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (EVAL_DIR / folder).glob("*.yaml")))
        raise ConfigError(f"{name_or_path!r}: no such file, and not one of eval/{folder}/: {known}")
    raw = load_yaml(path)
    missing = required - set(raw)
    if missing:
        raise ConfigError(f"{path}: missing keys {sorted(missing)}")
    return path, raw
