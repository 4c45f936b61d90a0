"""Assemble a VideoLLM from an image-pretrained vision tower and a chat LLM (the "build" recipe).

A build spec (YAML in ``configs/model/``) names the parts::

    vision: openai/clip-vit-large-patch14-336      # local dir or hub id; or {random_init: {model_type: ...}}
    llm: Qwen/Qwen2.5-0.5B-Instruct                # local dir, hub id, or a .gguf file
    projector: {type: stpool}
    vision_feature_layer: -2
    vision_feature_select: patch
    num_frames: 8

The vision tower and LLM keep their pretrained weights (every weight must load); the projector starts random.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from ..atomic import atomic_path, respect_umask
from ..cache import cache_dir
from ..errors import ConfigError
from ..logs import progress_bars
from .configuration import VideoLLMConfig
from .loading import check_loading_info
from .modeling import VideoLLM
from .preprocess import PreprocessSpec
from .processor import VideoLLMProcessor, prepare_tokenizer
from .spec import check_build_spec, load_build_spec, resolve_package_path
from .vision import feature_geometry, load_pretrained_vision

logger = logging.getLogger(__name__)


def load_llm(source: str, dtype=None, trust_remote_code: bool = False, quantization_config=None):
    """Load a causal LM and its tokenizer from a directory, hub id, or ``.gguf`` file (quantized by
    ``quantization_config``, a transformers ``BitsAndBytesConfig``, when given).

    A GGUF file is converted once (dequantized to float) into a plain safetensors checkpoint in the cache
    (:func:`~vllm_i2v.cache.cache_dir`), which every later load reads: seconds faster, and trainable.
    """
    source = resolve_package_path(source)
    if str(source).endswith(".gguf"):
        source = str(converted_gguf(Path(source)))
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    model, info = AutoModelForCausalLM.from_pretrained(
        source, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
    )
    check_loading_info(source, "LLM", info, kinds=("missing_keys", "mismatched_keys"))
    return model, tokenizer


def llm_config(source: str):
    """An LLM's config without its weights: a folder's or hub id's ``config.json``, a GGUF file's metadata (or its
    converted copy in the cache)."""
    source = resolve_package_path(source)
    if str(source).endswith(".gguf"):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: no such GGUF file")
        converted = _converted_path(path)
        if (converted / "config.json").is_file():
            return AutoConfig.from_pretrained(converted)
        return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    return AutoConfig.from_pretrained(source)


def _converted_path(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "gguf" / f"{path.stem}-{key}"


def converted_gguf(path: Path) -> Path:
    """The plain checkpoint converted from GGUF file ``path``, made in the cache on first use (atomically, so an
    interrupted conversion leaves nothing half-written). Keyed by the file's name, size and modification time."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such GGUF file")
    target = _converted_path(path)
    if (target / "config.json").is_file():
        return target
    logger.warning("converting %s into %s (once)", path, target)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    with progress_bars():  # ~15 s on first use: show it
        model, info = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, output_loading_info=True)
    check_loading_info(path, "LLM", info, kinds=("missing_keys", "mismatched_keys"))
    model.hf_quantizer.remove_quantization_config(model)  # dequantized already; the marker blocks saving
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            respect_umask(tmp)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        # another process (a second rank) finished the same conversion first
    return target


def vision_part(spec, dtype=None, trust_remote_code: bool = False):
    """A vision tower and its preprocessing from a build spec's ``vision`` entry (path, hub id or random_init)."""
    if isinstance(spec, dict) and set(spec) <= {"random_init", "preprocess"} and "random_init" in spec:
        logger.warning("vision tower built with RANDOM weights from %s", spec["random_init"])
        settings = dict(spec["random_init"])
        config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        model = AutoModel.from_config(config, dtype=dtype)
        return model, PreprocessSpec.from_dict(spec.get("preprocess") or {})
    if not isinstance(spec, str):
        raise ConfigError(f"vision must be a path, a hub id or {{random_init: {{model_type: ...}}}}, got {spec!r}")
    spec = resolve_package_path(spec)
    return load_pretrained_vision(spec, dtype=dtype, trust_remote_code=trust_remote_code)


def config_from_parts(
    spec: dict, tower, text_config, preprocess: PreprocessSpec, video_token_id: int, image_token_id: int
) -> VideoLLMConfig:
    """The VideoLLMConfig of a checked build spec from its parts: the vision tower (real, or on the meta device),
    the LLM's config, the frame preprocessing and the placeholder ids."""
    grid, prefix_tokens = feature_geometry(tower, preprocess)
    return VideoLLMConfig(
        vision_config=tower.config.to_dict(),
        text_config=text_config.to_dict(),
        projector=spec["projector"],
        vision_feature_layer=spec["vision_feature_layer"],
        vision_feature_select=spec["vision_feature_select"],
        vision_preprocess=preprocess.to_dict(),
        vision_grid=list(grid),
        vision_prefix_tokens=prefix_tokens,
        vision_lora=spec["vision_lora"],
        video_token_id=video_token_id,
        image_token_id=image_token_id,
        num_frames=spec["num_frames"],
    )


def build_video_llm(spec: dict) -> tuple[VideoLLM, VideoLLMProcessor]:
    """Build an untrained-projector VideoLLM and its processor from a build spec (see :class:`BuildSpec`)."""
    spec = check_build_spec(spec)
    dtype = getattr(torch, spec["dtype"])
    remote = spec["trust_remote_code"]
    vision_model, preprocess = vision_part(spec["vision"], dtype, remote)
    llm, tokenizer = load_llm(spec["llm"], dtype=dtype, trust_remote_code=remote)
    if spec.get("tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(resolve_package_path(spec["tokenizer"]), trust_remote_code=remote)
    video_id, image_id = prepare_tokenizer(tokenizer)

    config = config_from_parts(spec, vision_model, llm.config, preprocess, video_id, image_id)
    model = VideoLLM(config, vision_model=vision_model, language_model=llm).to(dtype).eval()
    return model, VideoLLMProcessor(tokenizer, config)


def build_checkpoint(spec_path, out, overrides: list[str] = ()) -> tuple[Path, int]:
    """``vllm-i2v build``: build from the spec file (with overrides) and save the checkpoint to ``out``
    atomically, with the spec it came from. Returns the folder and the parameter count."""
    import yaml

    spec = load_build_spec(spec_path, overrides)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose another output folder")
    vision = spec["vision"] if isinstance(spec["vision"], str) else "random init"
    logger.warning(
        "building from %s (vision: %s, llm: %s, projector: %s)",
        spec_path,
        vision,
        spec["llm"],
        spec["projector"].get("type"),
    )
    model, processor = build_video_llm(spec)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "build_spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return out, sum(p.numel() for p in model.parameters())
