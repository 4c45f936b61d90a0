"""Training: loss goes down, QLoRA survives an evaluation, the trainability check, resume after a kill,
merge, configs, and 2-rank DeepSpeed ZeRO-2 / ZeRO-3 runs through the launcher scripts users run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import bitsandbytes as bnb
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from ports import free_port
from tiny import random_frames

from vllm_i2v.cli import main
from vllm_i2v.errors import ConfigError
from vllm_i2v.models import VideoLLMProcessor
from vllm_i2v.models.checkpoint import export_parts, load_model, merge_checkpoint
from vllm_i2v.plan import estimate, setup_from_training_config
from vllm_i2v.train.config import load_train_config, training_arguments
from vllm_i2v.train.feature_cache import tower_fingerprint
from vllm_i2v.train.run import make_trainer, run_training
from vllm_i2v.train.trainer import TrainabilityError
from vllm_i2v.video.writer import write_video

ROOT = Path(__file__).resolve().parents[1]
COLORS = {"red": (230, 30, 30), "blue": (40, 80, 230), "green": (30, 200, 30), "yellow": (240, 220, 30)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """16 clips of one flat colour each; the answer names the colour (learnable from the video alone)."""
    root = tmp_path_factory.mktemp("train_data")
    (root / "videos").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(16):
        name = list(COLORS)[i % 4]
        frames = np.broadcast_to(np.array(COLORS[name], dtype=np.uint8), (8, 32, 32, 3)).copy()
        frames = np.clip(frames.astype(int) + rng.integers(-10, 10, frames.shape), 0, 255).astype(np.uint8)
        write_video(root / "videos" / f"{i}.mp4", frames, fps=4)
        rows.append(
            {
                "id": str(i),
                "video": f"{i}.mp4",
                "conversations": [
                    {"from": "human", "value": "<video>\nWhat color is the clip?"},
                    {"from": "gpt", "value": f"It is {name}."},
                ],
            }
        )
    (root / "train.json").write_text(json.dumps(rows))
    return root


def write_config(tmp_path: Path, saved_model: Path, dataset: Path, **changes) -> Path:
    config = {
        "model": str(saved_model),
        "data": {"train": str(dataset / "train.json"), "video_root": str(dataset / "videos"), "num_frames": 4},
        "trainable": {"projector": True, "llm": "lora"},
        "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"},
        "training": {
            "output_dir": str(tmp_path / "out"),
            "max_steps": 30,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "logging_steps": 1,
            "save_steps": 1000,
            "dataloader_num_workers": 0,
            "seed": 0,
        },
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            config[section][name] = value
        else:
            config[section] = value
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def logged_losses(output_dir: Path) -> dict[int, float]:
    states = sorted(output_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    history = json.loads(states[-1].read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def test_loss_decreases_and_merge_matches(tmp_path, saved_model, dataset, capsys):
    final = run_training(write_config(tmp_path, saved_model, dataset, training__save_steps=30))
    out = capsys.readouterr().out
    assert "trainable parameters (projector + LLM LoRA r=8)" in out
    assert "trainability check after step 1:" in out and "tensors updated, 0/" in out
    losses = list(logged_losses(tmp_path / "out").values())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert {"config.json", "tokenizer.json", "trainable.json", "trainable.safetensors"} <= {
        p.name for p in final.iterdir()
    }
    assert (final / "trainable.safetensors").stat().st_size < 0.5 * (saved_model / "model.safetensors").stat().st_size

    processor = VideoLLMProcessor.from_pretrained(final)
    batch = processor([[{"role": "user", "content": "<video>\nWhat color is the clip?"}]], [[random_frames(4, 32, 32)]])
    trained = load_model(final)
    merged_info = merge_checkpoint(final, tmp_path / "merged")
    assert merged_info["llm"] > 0
    merged = load_model(tmp_path / "merged")
    assert merged.config.llm_lora is None and not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(**batch).logits, trained(**batch).logits, atol=1e-4, rtol=1e-4)
    merge_checkpoint(final, tmp_path / "merged0", lora_scale=0.0)  # no LoRA update: the base LLM
    base_llm = load_model(saved_model).language_model.state_dict()
    for name, weight in load_model(tmp_path / "merged0").language_model.state_dict().items():
        torch.testing.assert_close(weight, base_llm[name], atol=1e-6, rtol=0)


def test_qlora_evaluated_before_training_still_learns(tmp_path, saved_model, dataset, capsys):
    path = write_config(
        tmp_path,
        saved_model,
        dataset,
        quantization="nf4",
        training__max_steps=20,
        training__eval_on_start=True,
        training__eval_strategy="steps",
        training__eval_steps=1000,
        training__save_steps=20,
        data={
            "train": str(dataset / "train.json"),
            "eval": str(dataset / "train.json"),
            "video_root": str(dataset / "videos"),
            "num_frames": 4,
        },
    )
    run_training(path)
    assert "trainability check after step 1:" in capsys.readouterr().out  # it raises if LoRA got no gradient
    losses = list(logged_losses(tmp_path / "out").values())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_projector_gets_its_own_learning_rate(tmp_path, saved_model, dataset):
    trainer = make_trainer(load_train_config(write_config(tmp_path, saved_model, dataset, projector_lr=1e-2)))
    optimizer = trainer.create_optimizer()
    projector = {id(p) for p in trainer.model.projector.parameters()}
    lrs = {
        ("projector" if id(p) in projector else "rest"): g["lr"] for g in optimizer.param_groups for p in g["params"]
    }
    assert lrs == {"projector": 1e-2, "rest": trainer.args.learning_rate}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(
        p.requires_grad for p in trainer.model.parameters()
    )


def test_trainability_check_catches_a_frozen_lora(tmp_path, saved_model, dataset):
    trainer = make_trainer(load_train_config(write_config(tmp_path, saved_model, dataset, training__max_steps=3)))
    for name, param in trainer.model.language_model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(False)  # the bug users meet: adapters attached but never trained
    with pytest.raises(TrainabilityError, match="trainable tensors got no update .*lora_"):
        trainer.train()


def test_mixed_precision_stores_the_frozen_llm_in_16_bits_computing_the_same_step(
    tmp_path, saved_model, dataset, capsys
):
    """Under bf16 autocast the frozen LLM's linear weights are stored in bf16 (autocast copies them to bf16 at every
    use anyway): the same loss and gradients as float32 storage. Eager attention, when the config asks, computes
    the same loss to bf16's precision, evaluation runs on the 16-bit weights, and the trained checkpoint loads back
    with float32 weights and the model's own attention."""
    variants = {"fp32 storage": {}, "bf16": {"training__bf16": True}}
    variants["bf16 eager"] = {**variants["bf16"], "attention": "eager", "training__eval_on_start": True}
    variants["bf16 eager"].update(training__eval_strategy="steps", training__eval_steps=1000)
    variants["bf16 eager"]["data"] = {
        "train": str(dataset / "train.json"),
        "eval": str(dataset / "train.json"),
        "video_root": str(dataset / "videos"),
        "num_frames": 4,
    }
    configs, trainers = {}, {}
    for name, changes in variants.items():
        (tmp_path / name).mkdir()
        configs[name] = write_config(tmp_path / name, saved_model, dataset, training__max_steps=2, **changes)
        trainers[name] = make_trainer(load_train_config(configs[name]))
    stored = {n: p.dtype for n, p in trainers["bf16"].model.named_parameters()}
    assert {d for n, d in stored.items() if n.endswith("_proj.base_layer.weight")} == {torch.bfloat16}
    assert {d for n, d in stored.items() if "lora_" in n or "embed" in n or "projector" in n} == {torch.float32}
    assert {p.dtype for p in trainers["fp32 storage"].model.parameters()} == {torch.float32}
    assert trainers["bf16 eager"].model.language_model.config._attn_implementation == "eager"

    rows = trainers["bf16"].train_dataset
    batch = trainers["bf16"].data_collator([rows[i] for i in range(4)])
    losses, gradients = {}, {}
    for name, trainer in trainers.items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = trainer.model(**batch).loss
        loss.backward()
        losses[name] = loss.item()
        gradients[name] = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad])
    assert losses["bf16"] == losses["fp32 storage"]
    torch.testing.assert_close(gradients["bf16"], gradients["fp32 storage"], atol=0, rtol=0)
    assert losses["bf16 eager"] == pytest.approx(losses["bf16"], rel=2e-2)

    final = run_training(configs["bf16 eager"])  # the trainability check raises if something did not train
    assert "trainability check after step 1:" in capsys.readouterr().out
    evaluated = json.loads((tmp_path / "bf16 eager" / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert any("eval_loss" in entry for entry in evaluated["log_history"])  # evaluated before training, in bf16
    trained = load_model(final)
    assert {p.dtype for p in trained.parameters()} == {torch.float32}
    attention = load_model(saved_model).language_model.config._attn_implementation
    assert trained.language_model.config._attn_implementation == attention != "eager"


def test_step_bench_times_each_variant_on_the_same_batch(tmp_path, saved_model, dataset):
    """scripts/bench_step.py runs on a training config: four variants, and how the frozen weights are stored does
    not change the loss."""
    config = write_config(tmp_path, saved_model, dataset)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_step.py"), str(config), "training.bf16=true", "--rounds", "1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [
        line.split("|")[1:-1]
        for line in result.stdout.splitlines()
        if line.startswith("| sdpa") or line.startswith("| eager")
    ]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        ("sdpa", "float32"),
        ("sdpa", "16-bit"),
        ("eager", "float32"),
        ("eager", "16-bit"),
    ]
    losses = [float(r[4]) for r in rows]
    assert losses[0] == losses[1] and losses[2] == losses[3] and losses[0] > 0
    fp32 = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_step.py"), str(config)], capture_output=True, text=True
    )
    assert fp32.returncode == 2 and "training.bf16 or training.fp16 must be true" in fp32.stderr


def test_align_then_instruct_stages_chain(tmp_path, parts, dataset):
    spec = tmp_path / "build.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "vision": str(parts["clip"]),
                "llm": str(parts["llm"]),
                "projector": {"type": "adapool", "grid": [2, 2, 2]},
            }
        )
    )
    align = write_config(tmp_path, parts["llm"], dataset, trainable={"projector": True}, training__max_steps=4)
    config = yaml.safe_load(align.read_text())
    config.pop("model")
    config["build"] = str(spec)
    align.write_text(yaml.safe_dump(config))
    align_final = run_training(align)
    assert (tmp_path / "out" / "base" / "model.safetensors").is_file()  # built once, then the base of the deltas
    assert json.loads((align_final / "trainable.json").read_text())["weights"][0].startswith("projector.")
    instruct = tmp_path / "instruct"
    instruct.mkdir()
    stage2 = write_config(
        instruct, align_final, dataset, trainable={"projector": False, "llm": "lora"}, training__max_steps=4
    )
    final = run_training(stage2)
    model = load_model(final)  # instruct delta -> align delta -> built base
    aligned, built = (
        load_model(align_final).projector.state_dict(),
        load_model(tmp_path / "out" / "base").projector.state_dict(),
    )
    for name, weight in model.projector.state_dict().items():  # the aligned projector, carried through stage 2
        torch.testing.assert_close(weight, aligned[name], atol=0, rtol=0)
    assert any(not torch.equal(aligned[n], built[n]) for n in aligned)
    assert model.config.llm_lora is not None and model.config.projector["type"] == "adapool"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"quantization": "nf4", "trainable": {"projector": True, "llm": "full"}}, "QLoRA"),
        ({"trainable": {"projector": False}}, "nothing trains"),
        ({"build": "x.yaml"}, "exactly one of model"),
        ({"trainable": {"llm": "adapters"}}, "trainable.llm: must be one of 'frozen', 'lora', 'full', got 'adapters'"),
        ({"epochs": 3}, "epochs: unknown key 'epochs'"),
        (
            {"training__learning_rat": 1e-4},
            "training.learning_rat: unknown key 'learning_rat' \\(did you mean 'learning_rate'\\?\\)",
        ),
        ({"training__learning_rate": -1e-4}, "training.learning_rate: must be above 0, got -0.0001"),
        ({"data": {"num_frames": "eight"}}, "data.num_frames: must be a whole number, got 'eight'"),
        ({"lora": {"rank": 8}}, "lora.rank: unknown key 'rank'"),
    ],
)
def test_config_errors(tmp_path, saved_model, dataset, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(write_config(tmp_path, saved_model, dataset, **changes))


def test_every_config_problem_at_once_before_anything_loads(tmp_path, saved_model, dataset, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    config = write_config(
        tmp_path,
        saved_model,
        dataset,
        training__learning_rat=1e-4,
        training__learning_rate=-1.0,
        training__output_dir=str(tmp_path / "taken"),
        data={"train": "nowhere.json"},
    )
    started = time.perf_counter()
    assert main(["train", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"error: {config}: 4 problems" and len(lines) == 5
    assert any("training.learning_rat: unknown key 'learning_rat' (did you mean 'learning_rate'?)" in x for x in lines)
    assert any("training.learning_rate: must be above 0, got -1.0" in x for x in lines)
    assert any("data.train: nowhere.json: no such file" in x for x in lines)
    assert any(f"training.output_dir: {tmp_path / 'taken'}: exists and is not a folder" in x for x in lines)
    assert time.perf_counter() - started < 5  # nothing was loaded


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, saved_model, dataset):
    steps = {"training__max_steps": 40, "training__save_steps": 10, "training__per_device_train_batch_size": 8}
    straight = tmp_path / "straight"
    straight.mkdir()
    run_training(write_config(straight, saved_model, dataset, **steps))
    expected = logged_losses(straight / "out")

    killed = tmp_path / "killed"
    killed.mkdir()
    config = write_config(killed, saved_model, dataset, **steps)
    command = [sys.executable, "-m", "vllm_i2v.cli", "train", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not (killed / "out" / "checkpoint-10" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "out" / "final").exists(), "the run finished before it was killed"
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from" in result.stdout
    resumed = logged_losses(killed / "out")
    assert sorted(resumed) == sorted(expected) == list(range(1, 41))
    np.testing.assert_allclose(
        [resumed[s] for s in sorted(resumed)], [expected[s] for s in sorted(expected)], rtol=1e-4
    )


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_two_ranks_through_the_launcher(tmp_path, saved_model, dataset, stage):
    """ZeRO-2 on one node; ZeRO-3 through the multi-node script, where rank 1's batches are all text-only
    (rank 0's have videos): a model that skips its visual path on text-only batches hangs here."""
    config = write_config(
        tmp_path,
        saved_model,
        dataset,
        training__max_steps=4,
        training__save_steps=4,
        training__deepspeed=str(ROOT / "configs" / "deepspeed" / f"{stage}.json"),
    )
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "MASTER_PORT": str(free_port()),
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    if stage == "zero2":  # single node
        command = [str(ROOT / "scripts" / "train.sh"), str(config)]
        env["NUM_GPUS"] = "2"
    else:  # the multi-node script, with a hostfile naming this machine; one rank gets only text-only rows
        (tmp_path / "hostfile").write_text("localhost slots=2\n")
        rows = json.loads((dataset / "train.json").read_text())
        text_only = {
            "id": "t",
            "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}],
        }
        (tmp_path / "mixed.json").write_text(json.dumps([r for row in rows for r in (row, text_only)]))
        settings = yaml.safe_load(config.read_text())
        settings["data"]["train"] = str(tmp_path / "mixed.json")
        settings["training"].update(train_sampling_strategy="sequential", per_device_train_batch_size=1)
        config.write_text(yaml.safe_dump(settings))
        command = [str(ROOT / "scripts" / "train_multinode.sh"), str(config)]
        env.update(HOSTFILE=str(tmp_path / "hostfile"), MASTER_ADDR="127.0.0.1", DS_LAUNCHER_ARGS="--no_ssh_check")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "trainability check after step 1:" in log and "0/" in log
    assert (tmp_path / "out" / "checkpoint-4" / "global_step4").is_dir()  # DeepSpeed's own engine checkpoint
    losses = logged_losses(tmp_path / "out")
    assert sorted(losses) == [1, 2, 3, 4] and all(np.isfinite(list(losses.values())))
    load_model(tmp_path / "out" / "final")  # the trainable-only checkpoint loads on one process
    # it holds what DeepSpeed's own checkpoint holds (our save copies only those weights, gathered under ZeRO-3)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    ours = load_file(tmp_path / "out" / "checkpoint-4" / "trainable.safetensors")
    theirs = get_fp32_state_dict_from_zero_checkpoint(str(tmp_path / "out" / "checkpoint-4"))
    assert ours and all(torch.equal(tensor.float(), theirs[name].float()) for name, tensor in ours.items())


@pytest.mark.parametrize(
    "config",
    sorted((ROOT / "configs" / "train").glob("*.yaml")) + [ROOT / "configs/shapes/video.yaml"],
    ids=lambda p: p.name,
)
def test_shipped_training_configs_are_valid(config, tmp_path):
    loaded = load_train_config(config, check_files=False)
    ds = loaded.training.pop("deepspeed", None)
    assert ds is None or (ROOT / ds).is_file()
    assert loaded.describe_trainable() != "nothing"
    loaded.training["output_dir"] = str(tmp_path)
    training_arguments(loaded)  # every key is one transformers' TrainingArguments knows


def test_adapted_features_with_activation_checkpointing(tmp_path, saved_model, dataset, capsys):
    path = write_config(
        tmp_path,
        saved_model,
        dataset,
        trainable={"projector": True, "llm": "lora", "vision": "lora"},
        vision_lora={"r": 4, "lora_alpha": 8},
        training__max_steps=3,
        training__activation_checkpointing=True,
    )
    final = run_training(path)
    out = capsys.readouterr().out
    assert "projector + LLM LoRA r=8 + VISION LoRA r=4" in out
    weights = json.loads((final / "trainable.json").read_text())["weights"]
    assert any(w.startswith("vision_tower.") and "lora_" in w for w in weights)
    assert load_model(final).config.vision_lora == {"r": 4, "lora_alpha": 8}


def test_feature_cache(tmp_path, saved_model, dataset, capsys):
    cache = tmp_path / "cache"
    uniform = {
        "train": str(dataset / "train.json"),
        "video_root": str(dataset / "videos"),
        "num_frames": 4,
        "sampler": "uniform",
    }
    plain_dir, cached_dir = tmp_path / "plain", tmp_path / "cached"
    plain_dir.mkdir(), cached_dir.mkdir()
    run_training(
        write_config(plain_dir, saved_model, dataset, data=uniform, training__max_steps=10, training__save_steps=10)
    )
    run_training(
        write_config(
            cached_dir,
            saved_model,
            dataset,
            data=uniform,
            feature_cache=str(cache),
            training__max_steps=10,
            training__save_steps=10,
        )
    )
    out = capsys.readouterr().out
    assert "'videos': 16, 'extracted': 16, 'cached': 0, 'failed': 0" in out
    assert len(list(cache.glob("*/*.safetensors"))) == 16
    plain, cached = logged_losses(plain_dir / "out"), logged_losses(cached_dir / "out")
    # features stored in float16: the runs start equal and drift apart slowly (training is chaotic at this scale)
    np.testing.assert_allclose(list(cached.values())[:5], list(plain.values())[:5], rtol=1e-2)
    np.testing.assert_allclose(list(cached.values()), list(plain.values()), rtol=1e-1)

    again = tmp_path / "again"
    again.mkdir()
    os.utime(dataset / "videos" / "3.mp4")  # a changed video is extracted again, the rest are read
    run_training(
        write_config(again, saved_model, dataset, data=uniform, feature_cache=str(cache), training__max_steps=2)
    )
    assert "'extracted': 1, 'cached': 15" in capsys.readouterr().out


def test_feature_cache_refuses_random_frames(tmp_path, saved_model, dataset):
    with pytest.raises(ConfigError, match="feature cache needs the same frames every epoch"):
        make_trainer(load_train_config(write_config(tmp_path, saved_model, dataset, feature_cache=str(tmp_path / "c"))))


def test_full_vision_training_unfreezes_only_what_the_features_use(tmp_path, saved_model, dataset, capsys):
    path = write_config(
        tmp_path, saved_model, dataset, trainable={"projector": True, "vision": "full"}, training__max_steps=2
    )
    final = run_training(path)  # the trainability check raises if a trainable tensor got no update
    weights = json.loads((final / "trainable.json").read_text())["weights"]
    assert any(w.startswith("vision_tower.model.encoder.layers.1.") for w in weights)
    assert not any("encoder.layers.2." in w or "post_layernorm" in w for w in weights)  # past layer -2 of 3


def test_trainability_check_waits_out_a_warmup_from_zero(tmp_path, saved_model, dataset, capsys):
    run_training(
        write_config(
            tmp_path,
            saved_model,
            dataset,
            training__max_steps=4,
            training__warmup_steps=2,
            training__lr_scheduler_type="linear",
        )
    )
    out = capsys.readouterr().out
    assert "trainability check after step 2:" in out, out[-500:]  # step 1 ran at learning rate 0


def test_parts_bundle_loads_like_its_checkpoint(tmp_path, saved_model, parts, dataset):
    final = run_training(write_config(tmp_path, saved_model, dataset, training__max_steps=3))
    bundle = export_parts(final, tmp_path / "bundle", llm_source=str(parts["llm"]))
    names = {p.name for p in bundle.iterdir()}
    assert {"tower", "config.json", "trainable.json", "trainable.safetensors", "tokenizer.json"} <= names
    assert "model.safetensors" not in names  # the LLM is named, not copied
    config = json.loads((bundle / "config.json").read_text())
    assert not config["vision_config"].get("_name_or_path") and not config["text_config"].get("_name_or_path")
    assert json.loads((bundle / "trainable.json").read_text())["base_parts"] == {
        "vision": "tower",
        "llm": str(parts["llm"]),
    }
    processor = VideoLLMProcessor.from_pretrained(bundle)
    batch = processor([[{"role": "user", "content": "<video>\nWhat color is the clip?"}]], [[random_frames(4, 32, 32)]])
    expected, got = load_model(final)(**batch).logits, load_model(bundle)(**batch).logits
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)  # float16 parts
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.95
    assert (
        main(
            [
                "chat",
                "--model",
                str(bundle),
                "--video",
                str(next((dataset / "videos").iterdir())),
                "--question",
                "What color is the clip?",
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    qlora_dir = tmp_path / "qlora"
    qlora_dir.mkdir()
    qlora = make_trainer(load_train_config(write_config(qlora_dir, bundle, dataset, quantization="nf4")))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in qlora.model.language_model.modules())  # QLoRA from a bundle


def test_projector_changes_train_and_stay_with_the_checkpoint(tmp_path, build, parts, dataset):
    """A weight-free projector setting changed on a trained checkpoint (adapool's grid): the plan counts the new
    visual tokens, training feeds them, and the trained checkpoint and its bundle load with it; a change that would
    alter the projector's weights is a one-line error."""
    model, processor = build("adapool")  # grid [2, 2, 2]: 8 visual tokens for 4 frames on a 4x4 patch grid
    start = tmp_path / "start"
    model.save_pretrained(start)
    processor.save_pretrained(start)
    config = write_config(tmp_path, start, dataset, projector_changes={"grid": [2, 4, 4]}, training__max_steps=3)
    source, setup = setup_from_training_config(config)
    assert estimate(source, setup).tokens["per video"] == 32
    final = run_training(config)
    for checkpoint in (final, export_parts(final, tmp_path / "bundle", llm_source=str(parts["llm"]))):
        trained = load_model(checkpoint)
        assert trained.config.projector["grid"] == [2, 4, 4] and trained.projector.num_tokens(4) == 32
        assert VideoLLMProcessor.from_pretrained(checkpoint).config.num_visual_tokens(4) == 32
        assert not torch.equal(trained.projector.mlp[0].weight.float(), model.projector.mlp[0].weight.float())

    changed = tmp_path / "weights"
    changed.mkdir()
    with pytest.raises(ConfigError, match=r"projector settings \{'cell_motion': True\} change its weights"):
        run_training(write_config(changed, start, dataset, projector_changes={"cell_motion": True}))


def test_clips_and_stills_train_as_one_dataset(tmp_path, saved_model, dataset, capsys):
    """``data.train`` as a list of files: the clips and, from their own folder (``data.image_root``), stills of the
    same colours, trained as one dataset (joint image-video training), length-grouped by each kind's visual tokens;
    a missing file in the list is named."""
    stills = tmp_path / "stills"
    (stills / "images").mkdir(parents=True)
    rows = []
    for name, rgb in COLORS.items():
        Image.fromarray(np.full((32, 32, 3), rgb, dtype=np.uint8)).save(stills / "images" / f"{name}.png")
        question, answer = "<image>\nWhat color is the picture?", f"It is {name}."
        rows.append({"image": f"{name}.png", "conversations": [_turn("human", question), _turn("gpt", answer)]})
    (stills / "images.json").write_text(json.dumps(rows))
    data = {
        "train": [str(dataset / "train.json"), str(stills / "images.json")],
        "video_root": str(dataset / "videos"),
        "image_root": str(stills / "images"),
        "num_frames": 4,
        "sampler": "uniform",
    }
    config = write_config(
        tmp_path, saved_model, dataset, data=data, feature_cache=str(tmp_path / "cache"), training__max_steps=2
    )
    final = run_training(config)
    assert "'videos': 20, 'extracted': 20, 'cached': 0, 'failed': 0" in capsys.readouterr().out
    assert yaml.safe_load((final.parent / "train_config.yaml").read_text())["data"]["train"] == data["train"]
    # length grouping counts a still at one frame's visual tokens, a clip at its frames'
    rows = make_trainer(load_train_config(config)).train_dataset
    tokens = rows.processor.config.num_visual_tokens
    assert tokens(4) > tokens(1)
    text = [sum(len(m["content"]) for m in s.messages) // 4 for s in rows.samples]
    assert rows.lengths() == [n + tokens(4 if s.video else 1) for n, s in zip(text, rows.samples)]

    data["train"] = [data["train"][0], str(stills / "missing.json")]
    with pytest.raises(ConfigError, match=r"data.train: .*missing.json: no such file"):
        load_train_config(write_config(tmp_path, saved_model, dataset, data=data))


def _turn(speaker: str, text: str) -> dict:
    return {"from": speaker, "value": text}


def test_overrides_read_exponent_floats_as_numbers():
    from vllm_i2v.models.spec import apply_overrides

    assert apply_overrides({}, ["training.learning_rate=2e-4", "name=1e", "n=3"]) == {
        "training": {"learning_rate": 2e-4},
        "name": "1e",
        "n": 3,
    }


def test_feature_cache_key_ignores_where_the_tower_was_loaded_from(tmp_path, build, parts):
    """The same tower under another folder reads the same cached features; other weights do not."""
    moved = shutil.copytree(parts["clip"], tmp_path / "elsewhere")
    here, there = build("stpool")[0], build("stpool", vision=str(moved))[0]
    assert here.config.vision_config._name_or_path != there.config.vision_config._name_or_path
    assert tower_fingerprint(here) == tower_fingerprint(there)
    with torch.no_grad():
        next(there.vision_tower.parameters()).add_(1.0)  # other weights: another key
    assert tower_fingerprint(here) != tower_fingerprint(there)
