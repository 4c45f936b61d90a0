"""The one thread a server runs all of its model work on, loading included.

PyTorch's CPU kernels run on an OpenMP thread team, and each thread that calls into PyTorch gets a team of its own.
Once the teams together hold more threads than there are cores, OpenMP stops spinning between kernels and puts its
threads to sleep instead, and every small kernel then pays a wake-up: measured on a 2-core machine, a later turn's
first token took 0.12 s when generation ran on a different thread than the one that loaded the model, and
0.085 s when one thread did both. One thread for everything also serializes the model's use (one video encoded or
one answer generated at a time), which a lock did before.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor


class ModelThread:
    """A single worker thread: :meth:`call` waits for a function run on it, :meth:`run` awaits one, :meth:`submit`
    queues one. Work runs in the order it was queued."""

    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-i2v-model")

    def submit(self, fn, *args) -> Future:
        return self._executor.submit(fn, *args)

    def call(self, fn, *args):
        """``fn(*args)`` on the model thread; blocks until it returns (or raises)."""
        return self.submit(fn, *args).result()

    async def run(self, fn, *args):
        """``fn(*args)`` on the model thread, awaited from the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def close(self) -> None:
        """Stop taking work; what is queued and not started is dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
