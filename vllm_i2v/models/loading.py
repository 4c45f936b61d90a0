"""Loud loading: a checkpoint whose weights do not all load is an error that names the keys.

Users of the LLaVA family of repos often meet a model that loaded with random weights and answers "!!!!";
every load in vllm_i2v goes through :func:`check_loading_info` instead.
"""

from __future__ import annotations

from ..errors import CheckpointError

ALL_PROBLEMS = ("missing_keys", "unexpected_keys", "mismatched_keys")


def _describe(key) -> str:
    """A loading-report entry as text: a key, or ``key (checkpoint [shape] vs model [shape])`` for a mismatch."""
    if isinstance(key, tuple):
        name, in_checkpoint, in_model = key
        return f"{name} (checkpoint {list(in_checkpoint)} vs model {list(in_model)})"
    return str(key)


def check_loading_info(source, what: str, info: dict, kinds: tuple[str, ...] = ALL_PROBLEMS) -> None:
    """Raise :class:`CheckpointError` if transformers' ``output_loading_info`` report lists any of ``kinds``.

    Load with ``ignore_mismatched_sizes=True`` so that shape mismatches land in the report (and here, by
    name) instead of a bare transformers error.
    """
    problems = {
        kind.removesuffix("_keys"): sorted(_describe(k) for k in info.get(kind) or ())
        for kind in kinds
        if info.get(kind)
    }
    if problems:
        raise CheckpointError(f"{source}: {what} weights do not all load: {problems}")
