"""Typed config schemas: dataclasses whose fields say what they are, read from YAML with every problem reported.

A field is declared with :func:`knob` (its default, a one-line description, and optional bounds); its type comes
from the annotation (``bool``, ``int``, ``float``, ``str``, ``dict``, ``list``, ``X | None``, ``Literal[...]``, or
another schema dataclass for a nested section). :func:`read` turns a mapping into the dataclass and collects
*every* problem in :class:`Problems` — an unknown key (with the closest known one), a wrong type, a value outside
its choices or bounds — so a user fixes a config in one pass instead of one error per run.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal

from .errors import ConfigError


def knob(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory=None,
    minimum=None,
    maximum=None,
    above=None,
    keys=None,
    implied=None,
) -> Any:
    """A documented schema field: ``doc`` is shown in generated docs and errors; ``minimum``/``maximum`` bound it
    inclusively, ``above`` exclusively. ``keys`` (for a mapping checked elsewhere, e.g. by transformers): a
    function of the value giving the dataclass whose fields document its keys; ``implied``: the values this project
    sets in that mapping unless a config does (documented beside the config's own)."""
    metadata = {"doc": doc, "minimum": minimum, "maximum": maximum, "above": above, "keys": keys, "implied": implied}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Problems(list):
    """``where: what is wrong`` lines, gathered while reading a whole config."""

    def add(self, where: str, text: str) -> None:
        self.append(f"{where}: {text}")

    def raise_if_any(self, source) -> None:
        """One :class:`ConfigError`: a single problem on one line, several one per line under the file's name."""
        if len(self) == 1:
            raise ConfigError(f"{source}: {self[0]}")
        if self:
            raise ConfigError(f"{source}: {len(self)} problems\n" + "\n".join(f"  {line}" for line in self))


def unknown_key(key: str, known) -> str:
    """``unknown key 'lerning_rate' (did you mean 'learning_rate'?)``."""
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return f"unknown key {key!r}" + (
        f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(known))}"
    )


def _type_name(kind) -> str:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(kind))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    if kind is type(None):
        return "null"
    return {
        bool: "true/false",
        int: "a whole number",
        float: "a number",
        str: "a string",
        dict: "a mapping",
        list: "a list",
    }.get(kind, getattr(kind, "__name__", str(kind)))


def _matches(value, kind) -> bool:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return value in typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        kind = origin
    return isinstance(value, kind) if isinstance(kind, type) else True


def _in_bounds(value, meta: dict) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if meta.get("minimum") is not None and value < meta["minimum"]:
        return f"must be at least {meta['minimum']}, got {value}"
    if meta.get("maximum") is not None and value > meta["maximum"]:
        return f"must be at most {meta['maximum']}, got {value}"
    if meta.get("above") is not None and value <= meta["above"]:
        return f"must be above {meta['above']}, got {value}"
    return None


def read(cls, values, where: str, problems: Problems):
    """``cls`` (a schema dataclass) filled from the mapping ``values``; every problem goes to ``problems`` (the
    field keeps its default then). Nested schema dataclasses are read the same way."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        problems.add(where, f"must be a mapping, got {type(values).__name__}")
        values = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            problems.add(f"{where}.{key}" if where else str(key), unknown_key(key, fields))
    kwargs = {}
    for name, f in fields.items():
        if name not in values:
            continue
        value, kind, at = values[name], hints[name], f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(kind):
            kwargs[name] = read(kind, value, at, problems)
        elif not _matches(value, kind):
            problems.add(at, f"must be {_type_name(kind)}, got {value!r}")
        elif bad := _in_bounds(value, f.metadata):
            problems.add(at, bad)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _doc_of(field: dataclasses.Field) -> str:
    """A field's one-line description: its ``doc`` (ours) or the first sentence of its ``help`` (transformers, peft)."""
    text = field.metadata.get("doc") or field.metadata.get("help") or ""
    first = " ".join(text.split()).split(". ")[0].rstrip(".")
    return first if len(first) <= 110 else first[:107] + "..."


def _default_of(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _flow(value) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def commented_yaml(cls, values: dict, indent: int = 0, list_all: bool = True, implied: dict | None = None) -> list[str]:
    """``values`` (a config of schema ``cls``) as YAML lines, each knob with a comment: what it does, its type, its
    default. Nested schema sections and mappings with documented keys (``knob(keys=...)``) are commented key by
    key; other mappings are written as they are. With ``list_all``, the knobs the file leaves out follow as comments
    (``# key: default``); ``implied``: values this project sets where a file does not (shown the same way)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - another library's dataclass whose annotations do not resolve here
        hints = {}
    pad = " " * indent
    lines = []
    for key, value in values.items():
        field = fields.get(key)
        kind = hints.get(key, field.type if field else None)
        sub = None
        if field is not None and dataclasses.is_dataclass(kind):
            sub = kind
        elif field is not None and field.metadata.get("keys") and isinstance(value, dict):
            sub = field.metadata["keys"](value)
        note = ""
        if field is not None:
            type_name = _type_name(kind) if not isinstance(kind, str) else kind
            default = _default_of(field)
            shown = "" if isinstance(default, dict) or sub is not None else f"; default {_flow(default)}"
            note = f"  # {_doc_of(field)} ({type_name}{shown})"
        if isinstance(value, dict) and value and sub is not None:
            lines.append(f"{pad}{key}:{note}")
            own = dataclasses.is_dataclass(kind)  # our section: every knob listed; another library's: what is set
            lines += commented_yaml(sub, value, indent + 2, list_all=own, implied=field.metadata.get("implied"))
        elif isinstance(value, dict) and value and len(_flow(value)) > 60:
            lines.append(f"{pad}{key}:{note}")
            lines += _block(value, indent + 2)
        else:
            lines.append(f"{pad}{key}: {_flow(value)}{note}")
    for key, value in (implied or {}).items():
        if key not in values:
            lines.append(f"{pad}# {key}: {_flow(value)}  # set by vllm_i2v unless given here")
    for key, field in fields.items() if list_all else ():
        if key not in values and field.metadata.get("doc") is not None and not key.startswith("_"):
            kind = hints.get(key, field.type)
            type_name = _type_name(kind) if not isinstance(kind, str) else kind
            lines.append(f"{pad}# {key}: {_flow(_default_of(field))}  # {_doc_of(field)} ({type_name})")
    return lines


def _block(values: dict, indent: int) -> list[str]:
    """A mapping without a schema: one key a line, nested mappings indented, other values in flow style."""
    lines = []
    for key, value in values.items():
        if isinstance(value, dict) and value and len(_flow(value)) > 40:
            lines += [f"{' ' * indent}{key}:", *_block(value, indent + 2)]
        else:
            lines.append(f"{' ' * indent}{key}: {_flow(value)}")
    return lines


def document_yaml(path, cls) -> str:
    """The text of the YAML config at ``path`` with every knob commented from ``cls`` (its leading comment block,
    the file's own description, is kept)."""
    from pathlib import Path

    import yaml

    text = Path(path).read_text()
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    values = yaml.safe_load(text) or {}
    return "\n".join(header + commented_yaml(cls, values)) + "\n"


def describe(cls, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(key, type, default, doc)`` for every knob of ``cls``, nested sections flattened with dotted keys."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(kind):
            rows += describe(kind, key + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((key, _type_name(kind), repr(default), f.metadata.get("doc", "")))
    return rows
