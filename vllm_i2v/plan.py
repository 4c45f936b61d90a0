"""``vllm-i2v plan``: visual tokens, sequence length and memory of a model x frames x batch x ZeRO x LoRA/QLoRA, from
configs alone — before any run, nothing downloaded, no weight read.

The model is built on PyTorch's ``meta`` device (shapes, no storage) from a checkpoint folder's config, a build
spec's parts' configs, or a training config's model. Parameters are counted per part. Model states (weights,
gradients, optimizer states) follow the training set-up: plain training keeps float32 weights under autocast (as
transformers' Trainer does) but the frozen LLM's linear weights in 16 bits (``train.precision``); DeepSpeed keeps
16-bit weights with float32 master copies, its ZeRO stages partition them (DeepSpeed's own estimators give the
trainable part's states). Activations are not guessed from a formula:
one training step of the meta model at the real shapes, forward and backward, counts the bytes of every tensor
alive at each moment (a ``TorchDispatchMode``) and keeps the peak: what autograd saves for the backward pass and
the working memory beside it (a frozen vision tower's intermediates for all the frames at once, the gradients
flowing back), with mixed precision emulated as autocast does it (matmul-like operations take 16-bit
copies of their inputs) and gradient checkpointing as transformers applies it. Inference needs the weights and
the KV cache of the sequence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import subprocess
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import ConfigError
from .train.precision import PRECISIONS, frozen_llm_dtype, llm_linear_layers, precision_of, store_frozen_llm_weights

GIB = 2**30
NF4_BYTES = 0.5 + 0.5 / 64 + 4 / (64 * 256)  # 4-bit weights, a 8-bit scale per 64, a fp32 scale per 256 blocks


@dataclass
class Setup:
    """What a run does with the model (command-line flags, or read from a training config)."""

    frames: int = 8
    batch: int = 1
    gpus: int = 1
    zero: int = 0  # 0: no DeepSpeed; 2 or 3: DeepSpeed ZeRO stage
    offload: bool = False  # optimizer states (and, ZeRO-3, parameters) in CPU memory
    zero3_live: int = 10**9  # ZeRO-3: parameters kept gathered at once (stage3_max_live_parameters, _reuse_distance)
    llm: str = "lora"  # frozen | lora | qlora | full
    lora_r: int = 16
    vision: str = "frozen"  # frozen | lora | full
    projector: bool = True
    grad_ckpt: bool = False
    dtype: str = "bf16"  # fp32, or bf16/fp16 mixed precision
    text_tokens: int = 128  # text around the visual tokens (prompt and answer)
    feature_cache: bool = False  # training reads cached tower features: the tower does not run
    attention: str | None = None  # the LLM's attention kernel in training (None: the checkpoint's, sdpa)
    projector_changes: dict = field(default_factory=dict)  # settings training changes on the checkpoint's projector

    @property
    def frozen_llm_dtype(self) -> torch.dtype | None:
        """The dtype training stores the frozen LLM's linear weights in (None: float32), as ``vllm-i2v train``."""
        return frozen_llm_dtype(self.dtype, self.zero > 0, self.llm)


@dataclass
class Plan:
    source: str
    setup: Setup
    tokens: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    inference: dict = field(default_factory=dict)
    device_memory: int | None = None
    device: str = ""
    fits: dict = field(default_factory=dict)
    largest: dict = field(default_factory=dict)
    change: str | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# --- the model, on the meta device -----------------------------------------------------------------------------


def meta_model(source, setup: Setup | None = None):
    """``(VideoLLM on the meta device, its config)`` for a checkpoint folder or a build spec, its projector changed
    as ``setup`` says training changes it."""
    from .models.configuration import VideoLLMConfig
    from .models.modeling import VideoLLM
    from .models.validity import check_checkpoint

    path = Path(source)
    if not path.exists():
        raise ConfigError(f"{source}: no such checkpoint folder or build spec")
    if path.is_dir():
        check_checkpoint(path)
        config = VideoLLMConfig.from_pretrained(path)
    elif path.suffix in (".yaml", ".yml"):
        config = config_from_spec(path)
    else:
        raise ConfigError(f"{source}: not a checkpoint folder, a build spec or a training config (YAML)")
    if setup is not None and setup.projector_changes:
        config.projector = {**config.projector, **setup.projector_changes}
    with torch.device("meta"):
        model = VideoLLM(config)
    return model, config


def config_from_spec(path) -> object:
    """A VideoLLMConfig for a build spec, from its parts' configs (folders, GGUF metadata, random_init): no weights."""
    from transformers import AutoConfig, AutoModel

    from .models.builder import config_from_parts, llm_config
    from .models.preprocess import PreprocessSpec, preprocess_spec_from_processor
    from .models.spec import load_build_spec, resolve_package_path
    from .models.vision import vision_config_of

    spec = load_build_spec(path)
    vision = spec["vision"]
    if isinstance(vision, dict):
        settings = dict(vision["random_init"])
        vision_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        preprocess = PreprocessSpec.from_dict(vision.get("preprocess") or {})
    else:
        from transformers import AutoImageProcessor

        folder = resolve_package_path(vision)
        vision_config = vision_config_of(AutoConfig.from_pretrained(folder))
        preprocess = preprocess_spec_from_processor(AutoImageProcessor.from_pretrained(folder))
    text_config = llm_config(spec["llm"])
    with torch.device("meta"):
        tower = AutoModel.from_config(vision_config)
    return config_from_parts(spec, tower, text_config, preprocess, video_token_id=0, image_token_id=1)


def setup_from_training_config(path, overrides: list[str] = ()) -> tuple[str, Setup]:
    """The model a training config starts from and how it trains: frames, batch, ZeRO, LoRA/QLoRA, precision."""
    from .train.config import load_train_config

    return setup_of(load_train_config(path, overrides, check_files=False))


def setup_of(config) -> tuple[str, Setup]:
    """(model or build spec, set-up) of a loaded :class:`~vllm_i2v.train.config.TrainConfig`."""
    training = config.training
    zero, offload, gpus, zero3_live = 0, False, 1, Setup.zero3_live
    if training.get("deepspeed"):
        deepspeed = training["deepspeed"]
        ds = deepspeed if isinstance(deepspeed, dict) else json.loads(Path(deepspeed).read_text())
        optimization = ds.get("zero_optimization", {})
        zero = int(optimization.get("stage", 0))
        offload = optimization.get("offload_optimizer", {}).get("device") == "cpu"
        zero3_live = min(
            _count(optimization.get(key), Setup.zero3_live)
            for key in ("stage3_max_live_parameters", "stage3_max_reuse_distance")
        )
        gpus = int(os.environ.get("WORLD_SIZE", 1))
    setup = Setup(
        frames=config.data.num_frames,
        batch=int(training.get("per_device_train_batch_size", 8)),
        gpus=gpus,
        zero=zero,
        offload=offload,
        zero3_live=zero3_live,
        llm=config.llm_mode,
        lora_r=int(config.lora.get("r", 16)),
        vision=config.trainable.vision,
        projector=config.trainable.projector,
        grad_ckpt=bool(training.get("activation_checkpointing") or training.get("gradient_checkpointing")),
        dtype=precision_of(training),
        feature_cache=bool(config.feature_cache),
        attention=config.attention,
        projector_changes=dict(config.projector_changes),
    )
    return config.model or config.build, setup


# --- counting ------------------------------------------------------------------------------------------------------


def lora_parameters(module: nn.Module, r: int, skip: tuple[str, ...] = ("lm_head",)) -> int:
    """Parameters LoRA of rank ``r`` adds on every linear layer of ``module`` (peft's all-linear: not the output)."""
    return sum(
        r * (m.in_features + m.out_features)
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear) and not name.endswith(skip)
    )


def count_parameters(model, config, setup: Setup) -> dict:
    """Parameters per part, trainable and frozen (LoRA counted as its own part: a checkpoint's own adapters, or
    those the set-up adds)."""
    base = lambda module: sum(p.numel() for n, p in module.named_parameters() if "lora_" not in n)  # noqa: E731
    adapters = lambda module: sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)  # noqa: E731
    parts = {
        "vision tower": base(model.vision_tower),
        "projector": base(model.projector),
        "LLM": base(model.language_model),
    }
    lora = 0
    if setup.llm in ("lora", "qlora"):
        lora += adapters(model.language_model) or lora_parameters(model.language_model, setup.lora_r)
    if setup.vision == "lora":
        lora += adapters(model.vision_tower) or lora_parameters(model.vision_tower.model, 8)
    trainable = {
        "vision tower": parts["vision tower"] if setup.vision == "full" else 0,
        "projector": parts["projector"] if setup.projector else 0,
        "LLM": parts["LLM"] if setup.llm == "full" else 0,
        "LoRA": lora,
    }
    parts["LoRA"] = lora
    return {name: {"total": parts[name], "trainable": trainable[name]} for name in parts}


# --- activations: tensors live during a training step, recorded on the meta device ----------------------------------


class _FusedAttention(torch.autograd.Function):
    """Scaled dot-product attention as the fused kernels keep it for backward (CPU's flash kernel, CUDA's flash and
    memory-efficient ones): queries, keys, values, the output and the log-sum-exp, never the S x S weights."""

    @staticmethod
    def forward(ctx, query, key, value):
        out = query.new_empty(*query.shape[:-1], value.shape[-1])
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, _, _ = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


class MetaTraining(TorchFunctionMode):
    """A training step's forward pass on the meta device as the real one keeps it: under mixed precision (a 16-bit
    ``dtype``) matmul-like operations take 16-bit copies of their floating-point inputs, as ``torch.autocast`` does
    (autograd saves those copies), and attention is the fused kernel's."""

    CAST = {
        F.linear,
        torch.matmul,
        torch.mm,
        torch.bmm,
        torch.addmm,
        torch.baddbmm,
        F.conv2d,
        F.conv3d,
        torch.Tensor.__matmul__,
    }

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def _cast(self, x):
        mixed = self.dtype != torch.float32
        return x.to(self.dtype) if mixed and isinstance(x, torch.Tensor) and x.is_floating_point() else x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query, key, value = (self._cast(t) for t in args[:3])
            if query.requires_grad or key.requires_grad or value.requires_grad:
                return _FusedAttention.apply(query, key, value)
            return query.new_empty(*query.shape[:-1], value.shape[-1])
        if func in self.CAST:
            args, kwargs = tuple(self._cast(a) for a in args), {k: self._cast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


class LiveTensors(TorchDispatchMode):
    """Bytes of the tensors alive at each moment and their peak: every operation's outputs are counted by storage
    (views share their base's) until the last tensor on that storage is freed; ``ignored`` storages (the weights)
    are not counted."""

    def __init__(self, ignored: set[int]):
        super().__init__()
        self.ignored = ignored
        self.live = self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage -> [bytes, tensors on it]
        self._tensors: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and id(tensor) not in self._tensors:
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.ignored:
            return
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        self._tensors.add(id(tensor))
        weakref.finalize(tensor, self._release, key, id(tensor))

    def _release(self, key: int, tensor: int) -> None:
        self._tensors.discard(tensor)
        entry = self._storages[key]
        entry[1] -= 1
        if not entry[1]:
            self.live -= entry[0]
            del self._storages[key]

    def restart_peak(self) -> None:
        self.peak = self.live


@dataclass
class StepActivations:
    """Activation bytes of one training step: the vision tower's peak while it runs (its working memory for all the
    frames at once), what it keeps after (its features; when it trains, what autograd saved), and the peak of the
    rest of the step, forward and backward, above that."""

    tower_peak: int
    tower_keeps: int
    rest_peak: int

    @property
    def total(self) -> int:
        return max(self.tower_peak, self.tower_keeps + self.rest_peak)

    def parts(self) -> dict[str, int]:
        """The step's peak split in two: the projector and LLM's, and what the tower adds to it."""
        return {"vision tower": self.total - self.rest_peak, "projector + LLM": self.rest_peak}


def step_activations(model, config, setup: Setup) -> StepActivations:
    """One training step of the meta model at the real shapes, forward and backward, its live tensors counted
    (weights apart, gradients of the trainable parameters apart: model states count them)."""
    prepare_for_plan(model, setup)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:  # gradients accumulate into these: model states
        parameter.grad = torch.zeros_like(parameter, device="meta")
    held = [*model.parameters(), *model.buffers(), *(p.grad for p in trainable)]
    live = LiveTensors({t.untyped_storage()._cdata for t in held})
    frames = setup.frames * setup.batch
    length = config.num_visual_tokens(setup.frames) + setup.text_tokens
    answer = max(1, setup.text_tokens // 4)  # the supervised answer: a quarter of the text
    pixels = torch.zeros(frames, 3, *model.vision_tower.input_size, device="meta")
    if setup.feature_cache:  # the features are read from disk: the tower does not run
        with torch.no_grad():
            cached = model.vision_features(pixels)
    with torch.device("meta"), MetaTraining(PRECISIONS[setup.dtype]), live:
        if setup.feature_cache:
            features = torch.zeros_like(cached)
        elif setup.vision == "frozen":
            with torch.no_grad():
                features = model.vision_features(torch.zeros_like(pixels))
        else:
            features = model.vision_features(torch.zeros_like(pixels))
        tower_peak, tower_keeps = live.peak, live.live
        live.restart_peak()
        tokens = torch.stack(model.project(features, [setup.frames] * setup.batch))
        text = model.get_input_embeddings()(torch.zeros(setup.batch, setup.text_tokens, dtype=torch.long))
        positions = torch.arange(length - answer - 1, length - 1)  # as training: logits where a label follows
        embeds = torch.cat([tokens, text.to(tokens.dtype)], dim=1)
        del tokens, text
        mask = torch.ones(setup.batch, 1, length, length, dtype=torch.bool)  # a ready mask: nothing data-dependent
        logits = model.language_model(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=positions).logits
        del embeds
        loss = F.cross_entropy(logits.flatten(0, 1).float(), torch.zeros(setup.batch * answer, dtype=torch.long))
        del logits
        if loss.requires_grad:
            loss.backward()
        return StepActivations(tower_peak, tower_keeps, live.peak - tower_keeps)


def prepare_for_plan(model, setup: Setup) -> None:
    """Trainable flags, adapters and checkpointing on the meta model, as training would set them."""
    from .models.attention import set_attention
    from .models.lora import add_lora

    model.requires_grad_(False)
    model.projector.requires_grad_(setup.projector)
    if setup.llm in ("lora", "qlora") and not any("lora_" in n for n, _ in model.language_model.named_parameters()):
        add_lora(model.language_model, {"r": setup.lora_r, "target_modules": "all-linear"})
    elif setup.llm == "full":
        model.language_model.requires_grad_(True)
    if setup.vision == "full":
        model.vision_tower.model.requires_grad_(True)
    elif setup.vision == "lora":
        model.vision_tower.add_lora({"r": 8})
    if setup.frozen_llm_dtype:
        store_frozen_llm_weights(model.language_model, setup.frozen_llm_dtype)
    if setup.attention:
        set_attention(model.language_model, setup.attention)
    model.train()
    if setup.grad_ckpt:  # the recomputation in the backward pass runs outside the forward's mode: it gets its own
        dtype = PRECISIONS[setup.dtype]
        model.language_model.activation_checkpointing_enable(
            {"use_reentrant": False, "context_fn": lambda: (contextlib.nullcontext(), MetaTraining(dtype))}
        )


# --- model states -----------------------------------------------------------------------------------------------


def model_state_bytes(model, parameters: dict, setup: Setup) -> dict[str, int]:
    """Weights, gradients and optimizer states per device for the set-up (DeepSpeed's estimators for the
    trainable part under ZeRO)."""
    total = sum(p["total"] for p in parameters.values())
    trainable = sum(p["trainable"] for p in parameters.values())
    frozen = total - trainable
    quantized = _llm_linear_parameters(model) if setup.llm == "qlora" else 0
    largest_layer = _largest_layer(model)
    if setup.zero == 0:  # float32 weights under autocast (transformers' Trainer), the frozen LLM's linear ones 16-bit
        half = _llm_linear_parameters(model) if setup.frozen_llm_dtype else 0
        weights = (frozen - quantized - half) * 4 + half * 2 + quantized * NF4_BYTES + trainable * 4
        return {"weights": int(weights), "gradients": 4 * trainable, "optimizer": 8 * trainable}
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    half = 2 if setup.dtype != "fp32" else 4  # DeepSpeed casts the model to the training precision
    frozen_weights = (frozen - quantized) * half + quantized * NF4_BYTES
    if setup.zero == 2:
        _, trainable_states = estimate_zero2_model_states_mem_needs(trainable, setup.gpus, 1, setup.offload, 1.0)
        weights = frozen_weights + half * trainable
    else:
        _, trainable_states, _ = estimate_zero3_model_states_mem_needs(
            trainable, largest_layer, setup.gpus, 1, setup.offload, setup.offload, True, 1.0
        )
        # partitioned; from the second step on, DeepSpeed keeps every parameter it will use again within
        # stage3_max_reuse_distance gathered, up to stage3_max_live_parameters (both 1e9 in configs/deepspeed):
        # a model under 1e9 parameters is then whole on every device through the forward and backward passes
        live = max(min(total, setup.zero3_live), largest_layer)
        weights = frozen_weights / setup.gpus + half * live
        trainable_states -= 4 * largest_layer  # the estimator's one gathered layer: counted in weights
    return {
        "weights": int(weights),
        "gradients and optimizer": int(max(trainable_states - half * trainable * (setup.zero == 2), 0)),
    }


# --- the plan --------------------------------------------------------------------------------------------------


def plan(source, setup: Setup, device_memory: int | None = None, search: bool = True) -> Plan:
    """The plan of ``source`` (a checkpoint folder or build spec) for ``setup``; with ``search``, also the largest
    frames x batch that fits and, when it does not fit, the cheapest change that makes it fit."""
    result = estimate(source, setup, device_memory)
    if search:
        result.largest = largest_that_fits(source, setup, result.device_memory, result.device.startswith("CPU"))
        if not result.fits["training"]:
            result.change = cheapest_change(source, setup, result.device_memory)
    return result


def estimate(source, setup: Setup, device_memory: int | None = None) -> Plan:
    """Tokens, parameters and memory of ``source`` under ``setup`` (no search)."""
    model, config = meta_model(source, setup)
    result = Plan(str(source), setup)
    context = config.context_length
    per_video = config.num_visual_tokens(setup.frames)
    result.tokens = {
        "per frame": config.num_visual_tokens(1),
        "per video": per_video,
        "sequence": per_video + setup.text_tokens,
        "context": context,
        "text budget left": (context - per_video) if context else None,
    }
    if context and per_video + setup.text_tokens > context:
        raise ConfigError(
            f"{per_video} visual tokens + {setup.text_tokens} text tokens exceed the LLM's context of {context}"
        )
    result.parameters = count_parameters(model, config, setup)
    states = model_state_bytes(model, result.parameters, setup)
    activations = step_activations(model, config, setup)
    training = {**states, **{f"activations: {k}": v for k, v in activations.parts().items()}}
    training["allocator margin"] = int(0.1 * sum(training.values()))
    device_memory, result.device = (device_memory, "given") if device_memory else detected_memory()
    if result.device.startswith("CPU"):
        training.update(cpu_process_bytes(activations.total))
    training["total"] = sum(training.values())
    result.training = training
    result.inference = inference_bytes(config, result.parameters, setup)
    result.device_memory = device_memory
    budget = result.device_memory
    result.fits = {"training": training["total"] <= budget, "inference": result.inference["total"] <= budget}
    return result


def _fits(source, setup: Setup, budget: int) -> bool:
    try:
        return estimate(source, setup, budget).fits["training"]
    except ConfigError:  # more tokens than the context holds
        return False


def largest_that_fits(source, setup: Setup, budget: int, cpu: bool = False) -> dict:
    """The most frames (at the set-up's batch) and the largest batch (at its frames) whose training fits (``cpu``:
    in this process's memory, with what a CPU process holds besides, :func:`cpu_process_bytes`).

    The tower's activations grow with the frames (linearly), the rest of the step's with the batch linearly and with
    the sequence as a quadratic at most; measured on the meta model at three lengths and two batches, the search
    itself needs no further passes."""
    model, config = meta_model(source, setup)
    states = sum(model_state_bytes(model, count_parameters(model, config, setup), setup).values())

    def step(text: int, batch: int) -> StepActivations:
        model, config = meta_model(source, setup)
        return step_activations(model, config, dataclasses.replace(setup, batch=batch, text_tokens=text))

    visual = config.num_visual_tokens(setup.frames)
    lengths = [setup.text_tokens + extra for extra in (0, 256, 512)]
    ones = [step(text, 1) for text in lengths]
    twice = step(setup.text_tokens, 2)
    # what does not grow with the batch (16-bit copies of frozen weights under autocast), and per frame of the tower
    fixed = {
        name: 2 * getattr(ones[0], name) - getattr(twice, name) for name in ("tower_peak", "tower_keeps", "rest_peak")
    }
    per_frame = {name: (getattr(ones[0], name) - fixed[name]) / setup.frames for name in ("tower_peak", "tower_keeps")}
    (s1, s2, s3), rest = [visual + t for t in lengths], [one.rest_peak - fixed["rest_peak"] for one in ones]
    c2 = ((rest[2] - rest[0]) / (s3 - s1) - (rest[1] - rest[0]) / (s2 - s1)) / (s3 - s2)
    c1 = (rest[1] - rest[0]) / (s2 - s1) - c2 * (s1 + s2)
    c0 = rest[0] - c1 * s1 - c2 * s1 * s1
    context = config.context_length or 10**9

    def fits(frames: int, batch: int) -> bool:
        length = config.num_visual_tokens(frames) + setup.text_tokens
        if length > context:
            return False
        tower = {name: fixed[name] + per_frame[name] * frames * batch for name in per_frame}
        rest = fixed["rest_peak"] + batch * max(c0 + c1 * length + c2 * length * length, 0)
        activations = StepActivations(int(tower["tower_peak"]), int(tower["tower_keeps"]), int(rest)).total
        host = sum(cpu_process_bytes(activations).values()) if cpu else 0
        return 1.1 * (states + activations) + host <= budget

    found = {}
    for knob in ("frames", "batch"):
        best = 0
        for value in range(1, 1025):
            if not fits(value if knob == "frames" else setup.frames, value if knob == "batch" else setup.batch):
                break
            best = value
        found[knob] = best
    return found


def _count(value, default: int) -> int:
    """A DeepSpeed config's parameter count (``1e9``, ``"auto"``: the default)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _llm_linear_parameters(model) -> int:
    """The weights of the LLM's own linear layers: what QLoRA quantizes (see ``train.prepare.quantization_config``)
    and mixed precision stores in 16 bits when frozen."""
    return sum(layer.weight.numel() for layer in llm_linear_layers(model.language_model))


def _largest_layer(model) -> int:
    return max((m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))), default=0)


def check_training_fits(config, force: bool = False) -> str:
    """``vllm-i2v train``'s preflight: the plan of ``config`` (a loaded training config) in a few lines; a run that
    cannot fit the device it runs on is refused with the cheapest change that makes it fit, unless ``force``."""
    source, setup = setup_of(config)
    result = estimate(source, setup)
    total, budget = result.training["total"], result.device_memory
    summary = (
        f"plan: {result.tokens['per video']} visual tokens per video, sequence ~{result.tokens['sequence']}; training "
        f"needs ~{gib(total)} per device of {gib(budget)} ({result.device}); `vllm-i2v plan` has the breakdown"
    )
    if not result.fits["training"] and not force:
        change = cheapest_change(source, setup, budget) or "no change of frames, batch or memory settings fits"
        raise ConfigError(
            f"this run needs ~{gib(total)} per device but {result.device} has {gib(budget)}: {change} "
            "(--force runs it anyway)"
        )
    return summary


def warn_if_too_large(path, frames: int | None = None) -> None:
    """Before a checkpoint's weights load for inference: a warning on stderr when they and the KV cache for
    ``frames`` (default: the model's) would not fit this machine's device."""
    from .models.configuration import VideoLLMConfig
    from .models.validity import check_checkpoint

    check_checkpoint(path)
    warning = inference_warning(path, frames or VideoLLMConfig.from_pretrained(path).num_frames)
    if warning:
        print(warning, file=sys.stderr)


def inference_warning(source, frames: int, text_tokens: int = 512) -> str | None:
    """A warning when ``source``'s weights and KV cache would not fit the device it is about to load on."""
    try:
        model, config = meta_model(source)
        setup = Setup(frames=frames, batch=1, llm="frozen", dtype="fp32", text_tokens=text_tokens)
        needed = inference_bytes(config, count_parameters(model, config, setup), setup)["total"]
    except Exception:  # noqa: BLE001 - a warning must never stop the command
        return None
    budget, device = detected_memory()
    if needed <= budget:
        return None
    return f"warning: {source} needs ~{gib(needed)} for its weights and KV cache; {device} has {gib(budget)}"


def cheapest_change(source, setup: Setup, budget: int) -> str | None:
    """The first change, cheapest first, under which training fits: gradient checkpointing, a smaller batch
    (with gradient accumulation for the same step), ZeRO-3 over the GPUs, CPU offload, QLoRA, fewer frames."""
    candidates = [
        (
            not setup.grad_ckpt,
            dict(grad_ckpt=True),
            "turn on gradient checkpointing (training.activation_checkpointing: true)",
        ),
        (setup.batch > 1, None, "batch"),
        (
            setup.gpus > 1 and setup.zero < 3,
            dict(zero=3),
            "use ZeRO-3 (training.deepspeed: configs/deepspeed/zero3.json)",
        ),
        (
            setup.zero > 0 and not setup.offload,
            dict(offload=True),
            "offload to CPU memory (configs/deepspeed/zero3_offload.json)",
        ),
        (setup.llm == "lora", dict(llm="qlora"), "use QLoRA (quantization: nf4)"),
        (True, None, "frames"),
    ]
    for applies, change, text in candidates:
        if not applies:
            continue
        if change is not None:
            if _fits(source, dataclasses.replace(setup, **change), budget):
                return text
            continue
        best = largest_that_fits(source, setup, budget)[text]
        if best >= 1:
            if text == "batch":
                steps = math.ceil(setup.batch / best)
                return f"per_device_train_batch_size: {best} with gradient_accumulation_steps x{steps} (the same step)"
            return f"sample {best} frames instead of {setup.frames} (data.num_frames: {best})"
    return None


def inference_bytes(config, parameters: dict, setup: Setup) -> dict[str, int]:
    """Weights (in the run's precision) and the KV cache of one sequence per batch row."""
    text = config.text_config
    weights = sum(p["total"] for name, p in parameters.items() if name != "LoRA") * (2 if setup.dtype != "fp32" else 4)
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_token = 2 * text.num_hidden_layers * heads * head_dim * (2 if setup.dtype != "fp32" else 4)
    cache = per_token * (config.num_visual_tokens(setup.frames) + setup.text_tokens) * setup.batch
    return {"weights": int(weights), "KV cache": int(cache), "total": int(weights + cache)}


def cpu_process_bytes(activations: int) -> dict[str, int]:
    """What a training process on a CPU holds beside its tensors: the runtime, and the heap glibc's malloc keeps.

    The heap: memory a step frees stays with the process (blocks freed below live ones, sizes the next allocations
    do not fit). ``scripts/bench_heap.py`` measured malloc holding 0.34-0.63 GiB beyond the step's peak in use,
    beside 0.31-0.32 GiB of activations, in three of the README's plan-bench configurations: counted as the step's
    activations once more."""
    return {"heap kept by malloc (CPU)": activations, "runtime (CPU process)": runtime_bytes()}


@functools.lru_cache(maxsize=1)
def runtime_bytes() -> int:
    """What a CPU training process holds besides the model: a fresh Python with vllm_i2v's training stack imported
    (torch, transformers, peft, DeepSpeed), measured once in a child process (resident memory)."""
    probe = (
        "import vllm_i2v.train.run, deepspeed, peft\n"
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmRSS:')).split()[1])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    return int(done.stdout.strip().splitlines()[-1]) * 1024 if done.returncode == 0 else 0


def detected_memory() -> tuple[int, str]:
    """(bytes, what) of the device this machine would run on: the first GPU's memory, else the machine's RAM."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory, torch.cuda.get_device_name(0)
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return pages, "CPU (this machine's memory)"


def parse_size(text: str) -> int:
    """``24GiB``, ``80GB``, ``512MiB`` -> bytes."""
    units = {"gib": GIB, "gb": 10**9, "mib": 2**20, "mb": 10**6, "tib": 2**40}
    lowered = text.strip().lower()
    for unit, size in units.items():
        if lowered.endswith(unit):
            try:
                return int(float(lowered[: -len(unit)]) * size)
            except ValueError:
                break
    raise ConfigError(f"device memory {text!r}: expected a size such as 24GiB or 80GB")


def gib(size: int | float) -> str:
    return f"{size / GIB:.2f} GiB" if size >= GIB / 100 else f"{size / 2**20:.1f} MiB"


def render(result: Plan) -> str:
    """The plan as the terminal shows it."""
    s, t = result.setup, result.tokens
    llm = {"lora": f"LoRA r={s.lora_r}", "qlora": f"QLoRA (NF4) r={s.lora_r}", "full": "full", "frozen": "frozen"}[
        s.llm
    ]
    zero = f"ZeRO-{s.zero}{' + offload' if s.offload else ''}" if s.zero else "no DeepSpeed"
    lines = [
        f"plan for {result.source}",
        f"  set-up: {s.frames} frames x batch {s.batch} per device, {s.gpus} device(s), {zero}, LLM {llm}, "
        f"vision {s.vision}, {s.dtype}{' (frozen LLM weights stored 16-bit)' if s.frozen_llm_dtype else ''}"
        f"{', gradient checkpointing' if s.grad_ckpt else ''}{', feature cache' if s.feature_cache else ''}"
        f"{f', {s.attention} attention' if s.attention else ''}",
        "tokens:",
        f"  visual tokens: {t['per frame']} per frame, {t['per video']} per video",
        f"  sequence: {t['sequence']} ({t['per video']} visual + {s.text_tokens} text); context {t['context']}, "
        f"{t['text budget left']} left for text beside the video",
        "parameters (trainable / total):",
    ]
    for part, counts in result.parameters.items():
        lines.append(f"  {part:<14}{counts['trainable'] / 1e6:10.2f}M / {counts['total'] / 1e6:9.2f}M")
    lines.append(f"training memory per device ({result.device}: {gib(result.device_memory)}):")
    lines += [f"  {name:<32}{gib(value):>12}" for name, value in result.training.items()]
    fits = "yes" if result.fits["training"] else "NO"
    lines.append(f"  fits in {gib(result.device_memory)}: {fits}")
    lines.append("inference memory:")
    lines += [f"  {name:<32}{gib(value):>12}" for name, value in result.inference.items()]
    lines.append(f"  fits in {gib(result.device_memory)}: {'yes' if result.fits['inference'] else 'NO'}")
    if result.largest:
        lines.append(
            f"largest that fits: {result.largest['frames']} frames at batch {s.batch}; batch "
            f"{result.largest['batch']} at {s.frames} frames"
        )
    if result.change:
        lines.append(f"to fit: {result.change}")
    return "\n".join(lines)
