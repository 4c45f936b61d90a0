"""Where a CPU training process's memory goes: the heap glibc's malloc hands out (in use) against what it holds
(in use + freed blocks it keeps) and the resident set, sampled every 5 ms over a few real training steps.

The plan (`vllm-i2v plan`) counts tensors; on a CPU the resident set also holds the freed blocks malloc keeps.
This shows how much, for any training config (Linux with glibc; one process, no DeepSpeed):

    python scripts/bench_heap.py TRAIN_CONFIG [--steps 3] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import ctypes
import threading
import time

GIB = 2**30


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


def heap_sample(libc) -> dict[str, float]:
    """GiB: malloc's bytes in use, the bytes it holds (heap arenas + mmapped blocks), and the resident set."""
    info = libc.mallinfo2()
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    return {
        "in use": (info.uordblks + info.hblkhd) / GIB,
        "held": (info.arena + info.hblkhd) / GIB,
        "resident": rss / GIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a training config (vllm-i2v train's YAML)")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, as vllm-i2v train takes them")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    from vllm_i2v.train.config import load_train_config
    from vllm_i2v.train.run import make_trainer

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    trainer = make_trainer(load_train_config(args.config, args.overrides))
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    if trainer.args.activation_checkpointing:  # as Trainer.train sets it up
        kwargs = trainer.args.activation_checkpointing_kwargs
        trainer.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    trainer.current_gradient_accumulation_steps = 1
    trainer.create_optimizer()
    samples: list[tuple[str, dict]] = []
    phase, running = ["start"], [True]

    def sample() -> None:
        while running[0]:
            samples.append((phase[0], heap_sample(libc)))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for step in range(args.steps):
        phase[0] = f"step {step + 1}"
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    running[0] = False
    sampler.join()
    print("| step | in use at start | peak in use | peak held | peak resident |")
    print("|---|---:|---:|---:|---:|")
    for name in dict.fromkeys(name for name, _ in samples if name != "start"):
        rows = [values for n, values in samples if n == name]
        peak = {key: max(v[key] for v in rows) for key in ("in use", "held", "resident")}
        print(
            f"| {name} | {rows[0]['in use']:.2f} GiB | {peak['in use']:.2f} GiB | {peak['held']:.2f} GiB | "
            f"{peak['resident']:.2f} GiB |"
        )


if __name__ == "__main__":
    main()
