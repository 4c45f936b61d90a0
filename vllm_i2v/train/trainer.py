"""transformers' Trainer, adapted: trainable-only checkpoints, length grouping without decoding videos, a
trainability check after the first optimizer step, and a progress bar that shows loss, lr and samples/s."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..errors import VllmI2VError
from ..models.checkpoint import load_trainable, save_trainable
from .distributed import gathered


class TrainabilityError(VllmI2VError):
    """What the config says trains and what the first optimizer step changed disagree."""


class VideoTrainer(Trainer):
    """Trainer that saves only what trains (plus config and tokenizer) and groups rows by approximate length."""

    def __init__(self, *args, base_checkpoint, processor, projector_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.base_checkpoint = base_checkpoint
        self.processor = processor
        self.projector_lr = projector_lr

    def create_optimizer(self, model=None):
        """transformers' optimizer; with ``projector_lr`` the projector's parameters get their own learning rate
        (a new projector learns faster than LoRA on a pretrained LLM may, as LLaVA's ``mm_projector_lr``)."""
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if self.projector_lr is None or not fresh:
            return optimizer
        projector = {id(p) for p in self.accelerator.unwrap_model(self.model).projector.parameters()}
        groups = list(optimizer.param_groups)
        optimizer.param_groups.clear()  # no state yet: regrouping loses nothing
        for group in groups:
            for params, lr in (
                ([p for p in group["params"] if id(p) not in projector], group["lr"]),
                ([p for p in group["params"] if id(p) in projector], self.projector_lr),
            ):
                if params:
                    optimizer.add_param_group({**group, "params": params, "lr": lr})
        return optimizer

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """transformers' ``save_model``, except under DeepSpeed: there it first copies (ZeRO-2) or gathers (ZeRO-3)
        the whole model's state dict on every rank, frozen weights included, although only the trainable weights
        are written — a full copy of the model in host memory per rank at every save. Here only those are copied
        (gathered from every rank under ZeRO-3)."""
        if not self.is_deepspeed_enabled:
            return super().save_model(output_dir, _internal_call)
        model = self.accelerator.unwrap_model(self.model)
        params = {name: param for name, param in model.named_parameters() if param.requires_grad}
        with gathered(list(params.values())):  # every rank together
            state = {name: param.detach().to("cpu", copy=True) for name, param in params.items()}
        self._save(output_dir or self.args.output_dir, state_dict=state)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        save_trainable(self.accelerator.unwrap_model(self.model), output_dir, self.base_checkpoint, state_dict)
        self.processor.save_pretrained(output_dir)
        torch.save(self.args, f"{output_dir}/training_args.bin")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_trainable(model or self.model, resume_from_checkpoint)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=dataset.lengths()
            )
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        return torch.utils.data.SequentialSampler(eval_dataset)  # order does not matter; never decode to sort


class TrainabilityCheck(TrainerCallback):
    """After the first optimizer step (the first with a learning rate above 0, under a warm-up): every
    parameter the config says trains changed, and no other did.

    Catches LoRA that trains nothing, a projector left frozen, a vision tower that trains by accident. A LoRA
    ``A`` matrix may stay still on the first step (its gradient is zero while ``B`` is zero), so it counts as
    reached when its ``B`` changed. Frozen weights are checked through a sample of them (at most
    ``frozen_sample`` tensors) to keep the check cheap on large models. Tensors are compared by
    :func:`fingerprint`, not kept: copies of every trainable tensor (the whole LLM, when it trains in full) and of
    the sample would cost host memory of the order of the model's.
    """

    def __init__(self, model: torch.nn.Module, expected: set[str], frozen_sample: int = 64):
        self.model = model
        self.expected = set(expected)
        frozen = [n for n, p in model.named_parameters() if n not in self.expected and p.dtype.is_floating_point]
        self.frozen_names = frozen[:: max(1, len(frozen) // frozen_sample)]
        self.before: dict[str, tuple[float, float]] = {}
        self.report = ""

    def _snapshot(self) -> dict[str, tuple[float, float]]:
        params = dict(self.model.named_parameters())
        names = sorted(self.expected) + self.frozen_names
        with gathered([params[n] for n in names]):
            return {n: fingerprint(params[n]) for n in names}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.before = self._snapshot()

    def on_step_end(self, args, state, control, **kwargs):
        if not self.before:
            return
        after = self._snapshot()
        changed = {n for n in after if after[n] != self.before[n]}
        warmup = args.get_warmup_steps(state.max_steps) if state.max_steps > 0 else 0
        if not changed & self.expected and state.global_step <= warmup:
            return  # a warm-up that starts at learning rate 0 moves nothing yet: look again after the next step
        still = []
        for name in sorted(self.expected - changed):
            partner = name.replace("lora_A", "lora_B")
            if "lora_A" in name and partner in changed and self.before[partner][1] == 0:  # B was all zeros
                continue
            still.append(name)
        moved_frozen = sorted(set(self.frozen_names) & changed)
        self.before = {}
        self.report = (
            f"trainability check after step {state.global_step}: "
            f"{len(self.expected) - len(still)}/{len(self.expected)} "
            f"trainable tensors updated, {len(moved_frozen)}/{len(self.frozen_names)} sampled frozen tensors moved"
        )
        if args.process_index == 0:
            tqdm.write(self.report)  # on its own line, above the progress bar
        if still or moved_frozen:
            problems = []
            if still:
                problems.append(f"{len(still)} trainable tensors got no update (e.g. {', '.join(still[:3])})")
            if moved_frozen:
                problems.append(f"frozen tensors changed (e.g. {', '.join(moved_frozen[:3])})")
            raise TrainabilityError("trainability check failed: " + "; ".join(problems))


def fingerprint(tensor: torch.Tensor) -> tuple[float, float]:
    """(sum, L2 norm) of ``tensor`` in float64: an optimizer step moves both (a changed tensor keeping both is
    vanishingly unlikely); the norm is 0 only for an all-zero tensor."""
    values = tensor.detach()
    return values.sum(dtype=torch.float64).item(), torch.linalg.vector_norm(values, dtype=torch.float64).item()


class MetricsProgressCallback(ProgressCallback):
    """The training bar with loss, learning rate and samples/s beside tqdm's own ETA."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.started, self.start_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or logs is None:
            return
        if "loss" not in logs:
            return super().on_log(args, state, control, logs=logs, **kwargs)
        steps = state.global_step - self.start_step
        samples = steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        rate = samples / max(time.perf_counter() - self.started, 1e-9)
        self.training_bar.set_postfix(
            loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', 0):.2e}", samples_per_s=f"{rate:.2f}"
        )
