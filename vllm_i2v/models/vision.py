"""The image-pretrained vision tower: any transformers vision model, applied frame by frame.

Loads CLIPVisionModel, SiglipVisionModel, Dinov2Model, ... (from a vision-only checkpoint or the vision half
of a dual-encoder checkpoint such as CLIP or SigLIP), selects the hidden states of one layer (default:
the penultimate, as LLaVA does) and keeps or drops the prefix tokens (CLS and register tokens).
Frozen by default; optional LoRA on its linear layers (the "adapted features" setting).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModel, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from ..errors import ConfigError
from .loading import check_loading_info
from .lora import add_lora
from .preprocess import PreprocessSpec, preprocess_spec_from_processor

FEATURE_SELECT = ("patch", "full")  # patch: drop CLS/register tokens (LLaVA's default); full: keep them


def vision_config_of(config: PretrainedConfig) -> PretrainedConfig:
    """The vision part of a config: itself for a vision model, ``config.vision_config`` for CLIP/SigLIP."""
    return getattr(config, "vision_config", None) or config


def load_pretrained_vision(path: str, dtype=None, trust_remote_code: bool = False):
    """Load a vision tower and its preprocessing from a local directory or hub id.

    Returns ``(model, PreprocessSpec)``. Every weight of the vision model must be present in the checkpoint
    (the text half of a CLIP/SigLIP checkpoint is ignored).
    """
    config = vision_config_of(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))
    if type(config) not in MODEL_MAPPING:
        raise ConfigError(f"{path}: {type(config).__name__} is not a vision model transformers' AutoModel knows")
    model_class = MODEL_MAPPING[type(config)]
    model, info = model_class.from_pretrained(
        path,
        config=config,
        dtype=dtype,
        output_loading_info=True,
        ignore_mismatched_sizes=True,
        trust_remote_code=trust_remote_code,
    )
    check_loading_info(
        path, "vision tower", info, kinds=("missing_keys", "mismatched_keys")
    )  # a CLIP text half is unexpected
    processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return model, preprocess_spec_from_processor(processor)


def takes_patches(model: nn.Module) -> bool:
    """True for NaFlex towers (SigLIP2) that read pre-cut patches plus their grid shape, not images."""
    return "spatial_shapes" in inspect.signature(model.forward).parameters


def tower_inputs(model: nn.Module, pixel_values: torch.Tensor) -> dict:
    """The keyword inputs ``model`` takes for images ``(F, 3, H, W)``: the images, or for NaFlex towers their
    patches ``(F, N, p*p*3)`` (row-major, as transformers' SigLIP2 processor cuts them) with mask and grid."""
    if not takes_patches(model):
        return {"pixel_values": pixel_values}
    p = model.config.patch_size
    frames, channels, height, width = pixel_values.shape
    grid_h, grid_w = height // p, width // p
    patches = pixel_values.reshape(frames, channels, grid_h, p, grid_w, p).permute(0, 2, 4, 3, 5, 1)
    return {
        "pixel_values": patches.reshape(frames, grid_h * grid_w, p * p * channels),
        "pixel_attention_mask": torch.ones(frames, grid_h * grid_w, dtype=torch.long, device=pixel_values.device),
        "spatial_shapes": torch.tensor([[grid_h, grid_w]] * frames, device=pixel_values.device),
    }


def feature_geometry(model: nn.Module, preprocess: PreprocessSpec) -> tuple[tuple[int, int], int]:
    """``((grid_h, grid_w), prefix_tokens)`` of a tower's output for frames preprocessed by ``preprocess``.

    The prefix (CLS, register tokens) is counted by running the embeddings alone on one blank frame.
    """
    height, width = preprocess.output_size()
    patch = model.config.patch_size
    grid = (height // patch, width // patch)
    embeddings = getattr(model, "embeddings", None) or model.vision_model.embeddings
    weight = next(model.parameters())
    inputs = tower_inputs(model, torch.zeros(1, 3, height, width, dtype=weight.dtype, device=weight.device))
    accepted = inspect.signature(embeddings.forward).parameters
    with torch.no_grad():
        tokens = embeddings(**{k: v for k, v in inputs.items() if k in accepted}).shape[1]
    return grid, tokens - grid[0] * grid[1]


class VisionTower(nn.Module):
    """Per-frame patch features ``(F, N, D)`` from ``pixel_values (F, 3, H, W)``."""

    def __init__(
        self,
        config: PretrainedConfig,
        preprocess: PreprocessSpec,
        feature_layer: int = -2,
        feature_select: str = "patch",
        lora: dict | None = None,
        model: nn.Module | None = None,
        geometry: tuple[tuple[int, int], int] | None = None,
    ):
        """``geometry`` ((grid_h, grid_w), prefix tokens) as stored in a checkpoint's config; measured with
        :func:`feature_geometry` when not given (not possible on ZeRO-3 partitioned weights)."""
        super().__init__()
        if feature_select not in FEATURE_SELECT:
            raise ConfigError(f"unknown vision_feature_select {feature_select!r}; known: {', '.join(FEATURE_SELECT)}")
        self.model = model if model is not None else AutoModel.from_config(config)
        self.feature_layer = feature_layer
        self.feature_select = feature_select
        num_layers = self.model.config.num_hidden_layers
        if not -(num_layers + 1) <= feature_layer <= num_layers:
            raise ConfigError(f"vision_feature_layer {feature_layer} is outside the tower's {num_layers} layers")
        self.input_size = preprocess.output_size()
        if geometry is None:
            geometry = feature_geometry(self.model, preprocess)
        (grid_h, grid_w), self.prefix_tokens = geometry
        self.grid = (grid_h, grid_w)
        self.hidden_size = self.model.config.hidden_size
        self.model.requires_grad_(False)
        if lora:
            self.add_lora(lora)

    def add_lora(self, lora: dict) -> None:
        """Inject LoRA adapters into the linear layers up to the feature layer; only they train.

        ``target_modules`` defaults to every linear layer of those transformer blocks; a list of names
        (``["q_proj", "v_proj"]``) is matched in those blocks only: layers past the feature layer never get
        gradients, and trainable parameters without gradients break distributed training.
        """
        settings = dict(lora)
        blocks, used = self._used_blocks()
        if settings.get("target_modules", "all-linear") == "all-linear":
            settings["target_modules"] = [
                name
                for name, module in self.model.named_modules()
                if isinstance(module, nn.Linear) and any(name.startswith(f"{blocks}.{i}.") for i in range(used))
            ]
        else:
            settings.setdefault("layers_to_transform", list(range(used)))
            settings.setdefault("layers_pattern", blocks.rsplit(".", 1)[-1])
        add_lora(self.model, settings)

    def _used_blocks(self) -> tuple[str, int]:
        """Name of the tower's list of transformer blocks, and how many of them the feature layer uses."""
        blocks = self._block_list()
        if blocks is None:
            raise ConfigError(
                f"cannot find the {self.model.config.num_hidden_layers} transformer blocks of "
                f"{type(self.model).__name__} for LoRA"
            )
        return blocks, self._blocks_used

    @property
    def _blocks_used(self) -> int:
        """How many transformer blocks the feature layer reads: ``hidden_states[k]`` is the output of the first k."""
        return self.feature_layer % (self.model.config.num_hidden_layers + 1)

    def _block_list(self) -> str | None:
        """Name of the tower's list of transformer blocks (None when it has no such list)."""
        num_layers = self.model.config.num_hidden_layers
        return next(
            (n for n, m in self.model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers), None
        )

    def unfreeze(self) -> None:
        """Make trainable exactly the weights the selected features depend on.

        Blocks past the feature layer, a post-layernorm or a pooling head never get gradients (and trainable
        weights without gradients break distributed training): one backward pass on a blank frame finds them.
        """
        self.model.requires_grad_(True)
        weight = next(self.model.parameters())
        blank = torch.zeros(1, 3, *self.input_size, dtype=weight.dtype, device=weight.device)
        with torch.enable_grad():
            self(blank).float().sum().backward()
        for param in self.model.parameters():
            param.requires_grad_(param.grad is not None)
            param.grad = None

    def _feature_layer_output(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The feature layer's hidden state, caught as its block returns it: transformers' ``output_hidden_states``
        would keep every layer's, for all the frames, until the tower returns."""
        inputs = tower_inputs(self.model, pixel_values)
        used = self._blocks_used
        blocks = self._block_list()
        if used == 0 or blocks is None:
            return self.model(**inputs, output_hidden_states=True).hidden_states[self.feature_layer]
        caught = []
        hook = self.model.get_submodule(blocks)[used - 1].register_forward_hook(
            lambda module, args, output: caught.append(output[0] if isinstance(output, tuple) else output)
        )
        try:
            self.model(**inputs)
        finally:
            hook.remove()
        return caught[0]

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.model.parameters())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        weight = next(self.model.parameters())
        pixel_values = pixel_values.to(device=weight.device, dtype=weight.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable):
            features = self._feature_layer_output(pixel_values)
        if self.feature_select == "patch":
            features = features[:, self.prefix_tokens :]
        return features
