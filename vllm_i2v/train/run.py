"""``vllm-i2v train CONFIG.yaml [key=value ...]``: the whole training recipe, top to bottom.

Runs as one process, or one per rank under the ``deepspeed`` launcher (``scripts/train.sh``); transformers'
Trainer and its DeepSpeed integration do the distribution.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from transformers import TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from ..atomic import write_text_atomic
from ..data import VideoChatDataset, load_samples
from ..models.checkpoint import merge_checkpoint
from ..video import make_sampler
from .config import TrainConfig, load_train_config
from .prepare import expected_trainable, parameter_report, prepare_model
from .trainer import MetricsProgressCallback, TrainabilityCheck, VideoTrainer

logger = logging.getLogger(__name__)

TRAINING_DEFAULTS = {
    "remove_unused_columns": False,  # the model takes pixel_values and frame_counts
    "report_to": "none",
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 2,
    "activation_checkpointing_kwargs": {"use_reentrant": False},
    "disable_tqdm": False,  # else transformers' log level decides, and ours is "error"
    "dataloader_pin_memory": torch.cuda.is_available(),
    "use_cpu": not torch.cuda.is_available(),  # CPU ranks under the deepspeed launcher need it to see each other
    "train_sampling_strategy": "group_by_length",
    "dataloader_num_workers": 2,
    "weight_decay": 0.0,
}


def training_arguments(config: TrainConfig) -> TrainingArguments:
    return TrainingArguments(**{**TRAINING_DEFAULTS, **config.training})


def build_datasets(config: TrainConfig, processor):
    data = config.data
    train = VideoChatDataset(
        load_samples(data.train, data.format), processor, data.video_root,
        make_sampler(data.sampler, data.num_frames, fps=data.fps, random_offset=True), strict=data.strict,
        decode_timeout=data.decode_timeout,
    )
    evaluation = None
    if data.eval:
        evaluation = VideoChatDataset(
            load_samples(data.eval, data.format), processor, data.video_root,
            make_sampler(data.sampler, data.num_frames, fps=data.fps, random_offset=False), strict=data.strict,
            decode_timeout=data.decode_timeout,
        )
    return train, evaluation


def make_trainer(config: TrainConfig) -> VideoTrainer:
    """The model, data and Trainer for ``config``, ready to ``train()``."""
    args = training_arguments(config)
    if args.deepspeed and args.world_size > 1:
        import deepspeed  # ZeRO-3 partitions weights as they load: DeepSpeed must see the process group first

        deepspeed.init_distributed()
    set_seed(args.seed)  # LoRA and a new projector are initialized here: same seed, same run
    model, processor, base = prepare_model(config, args)
    if args.process_index == 0:
        print(parameter_report(model, config), flush=True)
    train_set, eval_set = build_datasets(config, processor)
    trainer = VideoTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=processor.collate,
        callbacks=[TrainabilityCheck(model, expected_trainable(model, config))],
        base_checkpoint=base,
        processor=processor,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(MetricsProgressCallback)
    return trainer


def run_training(config_path, overrides: list[str] = ()) -> Path:
    """Train as the config says, resuming from the last checkpoint in the output directory; returns the final
    trainable-only checkpoint directory."""
    config = load_train_config(config_path, overrides)
    trainer = make_trainer(config)
    args = trainer.args
    output_dir = Path(args.output_dir)
    resume = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if resume and args.process_index == 0:
        print(f"resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    final = output_dir / "final"
    trainer.save_model(str(final))
    if args.process_index == 0:
        write_text_atomic(output_dir / "train_config.yaml", yaml.safe_dump(asdict(config), sort_keys=False))
        if config.save_full:
            merge_checkpoint(final, output_dir / "final-merged")
        print(f"saved {final}", flush=True)
    return final
