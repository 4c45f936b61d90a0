"""The few collective helpers training needs beyond what transformers' Trainer does itself."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def gathered(params):
    """Gather DeepSpeed ZeRO-3 partitioned parameters for reading (a no-op for ordinary parameters).

    Every rank must enter it together.
    """
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def leave_process_group() -> None:
    """End this rank's part in the process group, every rank together, so its communication threads are joined
    before the interpreter exits (left running, one can abort the rank at exit: "terminate called without an
    active exception"). A no-op in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
