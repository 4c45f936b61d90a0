"""``vllm-i2v train CONFIG.yaml [key=value ...]``: the whole training recipe, top to bottom.

Runs as one process, or one per rank under the ``deepspeed`` launcher (``scripts/train.sh``); transformers'
Trainer and its DeepSpeed integration do the distribution.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from transformers import set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from ..atomic import write_text_atomic
from ..data import VideoChatDataset, load_samples
from ..models.checkpoint import merge_checkpoint
from ..video import make_sampler
from .config import TrainConfig, load_train_config, training_arguments
from .distributed import barrier, gathered, leave_process_group
from .feature_cache import FeatureCache, extract_features, tower_fingerprint
from .prepare import expected_trainable, parameter_report, prepare_model
from .trainer import MetricsProgressCallback, TrainabilityCheck, VideoTrainer


def build_datasets(config: TrainConfig, processor, model, args):
    """Training (and evaluation) datasets; with a feature cache, the vision features are extracted first."""
    data = config.data
    datasets = []
    for files, random_offset in ((data.train_files, data.random_offset), ([data.eval] if data.eval else [], False)):
        if not files:
            datasets.append(None)
            continue
        sampler = make_sampler(data.sampler, data.num_frames, fps=data.fps, random_offset=random_offset)
        dataset = VideoChatDataset(
            [sample for path in files for sample in load_samples(path, data.format)],
            processor,
            data.video_root,
            sampler,
            strict=data.strict,
            decode_timeout=data.decode_timeout,
            independent_turns=data.independent_turns,
            image_root=data.image_root,
        )
        if config.feature_cache:
            dataset.feature_cache = fill_feature_cache(config, dataset, model, args)
            model.reads_cached_features = True
        datasets.append(dataset)
    return datasets


def fill_feature_cache(config: TrainConfig, dataset: VideoChatDataset, model, args) -> FeatureCache:
    """Extract the frozen tower's features of ``dataset``'s videos (each rank a share) into the cache."""
    tower = model.vision_tower
    with gathered(list(tower.parameters())):
        cache = FeatureCache(config.feature_cache, tower_fingerprint(model), dataset.sampler)
        device = tower.model.device
        tower.to(args.device)
        stats = extract_features(model, dataset, cache, args.process_index, args.world_size, config.data.decode_timeout)
        tower.to(device)
    barrier()
    if args.process_index == 0:
        print(f"feature cache {cache.directory}: {stats}", flush=True)
    return cache


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
    train_set, eval_set = build_datasets(config, processor, model, args)
    trainer = VideoTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=processor.collate,
        callbacks=[TrainabilityCheck(model, expected_trainable(model, config))],
        base_checkpoint=base,
        processor=processor,
        projector_lr=config.projector_lr,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(MetricsProgressCallback)
    return trainer


def run_training(config_path, overrides: list[str] = (), force: bool = False) -> Path:
    """Train as the config says, resuming from the last checkpoint in the output directory; returns the final
    trainable-only checkpoint directory. A run whose plan does not fit the device is refused unless ``force``."""
    from ..plan import check_training_fits

    config = load_train_config(config_path, overrides)
    summary = check_training_fits(config, force)
    if int(os.environ.get("RANK", 0)) == 0:
        print(summary, flush=True)
    trainer = make_trainer(config)
    args = trainer.args
    output_dir = Path(args.output_dir)
    resume = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if resume and args.process_index == 0:
        print(f"resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    if torch.cuda.is_available():  # what `vllm-i2v plan` predicts, as PyTorch's allocator saw it
        print(
            f"peak GPU memory (rank {args.process_index}): {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
            f"allocated, {torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved",
            flush=True,
        )
    final = output_dir / "final"
    trainer.save_model(str(final))
    if args.process_index == 0:
        write_text_atomic(output_dir / "train_config.yaml", yaml.safe_dump(asdict(config), sort_keys=False))
        if config.save_full:
            merge_checkpoint(final, output_dir / "final-merged")
        print(f"saved {final}", flush=True)
    leave_process_group()
    return final
