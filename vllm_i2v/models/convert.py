"""Import released image and video LLMs in transformers' own format as vllm_i2v checkpoints.

Each source is loaded through transformers' own class, which reads both the key layout of the released hub
checkpoints (``vision_tower.vision_model.*``) and the one transformers 5 saves (``vision_tower.embeddings.*``);
its modules are then moved onto ours, so the math stays theirs:

==================  ==========================================  ==============================================
``--from``          source class                                what the converted model does per frame
==================  ==========================================  ==============================================
``llava``           ``LlavaForConditionalGeneration``,          layer ``vision_feature_layer`` (-2), CLS dropped,
                    ``LlavaNextForConditionalGeneration``       every patch through the MLP (``mlp``); or, with
                                                                ``projector=``, pooled first (``adapool``,
                                                                ``slowfast``): training-free video, no new weights
``llava-next-video`` ``LlavaNextVideoForConditionalGeneration``  CLS dropped, the patch grid average- (or max-)
                                                                pooled with stride 2 *before* the MLP, no
                                                                newline token (video path)
``video-llava``     ``VideoLlavaForConditionalGeneration``      its *video* tower (weights separate from the
                                                                image tower), CLS kept: 257 tokens at 224 px
==================  ==========================================  ==============================================

The MLP's two linear layers become the projector's MLP; the language model and its LM head become a causal LM
of the same config; the tokenizer and the processor's chat template (transformers' multimodal list form) come
along. Images given to a converted LLaVA-NeXT or Video-LLaVA model go through the video path as one frame
(the peers' own image paths, anyres tiles and the separate image tower, are not imported).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..atomic import atomic_path
from ..errors import CheckpointError, ConfigError
from .configuration import VideoLLMConfig
from .loading import check_loading_info
from .modeling import VideoLLM
from .preprocess import preprocess_spec_from_processor
from .processor import VideoLLMProcessor, prepare_tokenizer
from .projectors import projector_class
from .projectors.base import MLPSettings
from .vision import feature_geometry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """A family of source checkpoints: its transformers classes by ``model_type``, and which tower reads video."""

    classes: dict[str, str]
    tower: str = "vision_tower"
    keep_cls: bool = False  # the video path keeps CLS whatever vision_feature_select_strategy says
    num_frames: int = 8


FAMILIES = {
    "llava": Family({"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration"}),
    "llava-next-video": Family({"llava_next_video": "LlavaNextVideoForConditionalGeneration"}, num_frames=16),
    "video-llava": Family({"video_llava": "VideoLlavaForConditionalGeneration"}, tower="video_tower", keep_cls=True),
}
POOL_MODES = {"average": "avg", "max": "max"}  # LLaVA-NeXT-Video's spatial_pool_mode -> our mlp pool_mode
PREPROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


def native_projector(family: str, config) -> dict:
    """Our projector settings with the source's own math: its MLP, and LLaVA-NeXT-Video's pooling before it."""
    settings = {"type": "mlp", "mlp_depth": 2, "act": config.projector_hidden_act}
    if family == "llava-next-video":
        mode = config.spatial_pool_mode
        if mode not in POOL_MODES:
            raise ConfigError(
                f"spatial_pool_mode {mode!r} has learned weights vllm_i2v does not import; "
                f"supported: {', '.join(POOL_MODES)}"
            )
        settings.update(pool_stride=int(config.spatial_pool_stride), pool_mode=POOL_MODES[mode])
    return settings


def convert_checkpoint(family: str, src, dst, projector: dict | None = None, num_frames: int | None = None) -> Path:
    """Convert checkpoint ``src`` of ``family`` (see :data:`FAMILIES`) into a vllm_i2v checkpoint at ``dst``.

    ``projector``: settings of a weight-free pooling projector to use the source's MLP under (``adapool``,
    ``slowfast``, ``mlp`` with ``pool_stride``; training-free video); default: the source's own math.
    Written atomically: ``dst`` appears complete or not at all.
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown --from {family!r}; known: {', '.join(FAMILIES)}")
    spec, src = FAMILIES[family], Path(src)
    if Path(dst).exists():
        raise CheckpointError(f"{dst}: already exists; convert into a new folder")
    if not (src / "config.json").is_file():
        raise CheckpointError(f"{src}: not a transformers checkpoint (no config.json)")
    source_config = AutoConfig.from_pretrained(src)
    if source_config.model_type not in spec.classes:
        raise CheckpointError(
            f"{src}: model_type {source_config.model_type!r} is not a {family} checkpoint "
            f"(expected {', '.join(spec.classes)})"
        )
    layer = source_config.vision_feature_layer
    if not isinstance(layer, int):
        raise ConfigError(f"{src}: vision_feature_layer {layer} concatenates several layers; vllm_i2v reads one")
    settings = dict(projector or native_projector(family, source_config))
    settings.setdefault("act", source_config.projector_hidden_act)
    kind = projector_class(settings)
    resolved = kind.resolve(settings) if issubclass(kind.Settings, MLPSettings) else {}
    if resolved.get("mlp_depth") != 2 or resolved.get("temporal_embeddings") or resolved.get("encoder_layers"):
        raise ConfigError(
            f"projector {settings['type']!r} has new weights; a conversion needs a pooling projector "
            "whose MLP is the source's 2-layer MLP (mlp, adapool, stpool, slowfast)"
        )

    preprocess = preprocess_spec_from_processor(preprocessor_settings(src))  # before the (slow) model load
    logger.warning("loading %s with transformers' %s", src, spec.classes[source_config.model_type])
    source_class = getattr(transformers, spec.classes[source_config.model_type])
    source, info = source_class.from_pretrained(src, dtype="auto", output_loading_info=True)  # its own dtype
    check_loading_info(src, family, info, kinds=("missing_keys", "mismatched_keys"))
    tower = getattr(source.model, spec.tower)
    tokenizer, chat_content = _tokenizer(src)
    llm = _language_model(source, source_config, tokenizer)
    grid, prefix = feature_geometry(tower, preprocess)
    # The source's own math keeps CLS where it does; a pooling projector reads the patch grid alone.
    keep_cls = projector is None and (spec.keep_cls or source_config.vision_feature_select_strategy == "full")
    config = VideoLLMConfig(
        vision_config=tower.config.to_dict(),
        text_config=llm.config.to_dict(),
        projector=settings,
        vision_feature_layer=layer,
        vision_feature_select="full" if keep_cls else "patch",
        vision_preprocess=preprocess.to_dict(),
        vision_grid=list(grid),
        vision_prefix_tokens=prefix,
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        num_frames=num_frames or spec.num_frames,
        chat_content=chat_content,
    )
    model = VideoLLM(config, vision_model=tower, language_model=llm).eval()
    model.projector.to(next(tower.parameters()).dtype)
    _copy_mlp(source.model.multi_modal_projector, model.projector.mlp)
    with atomic_path(dst) as tmp:
        model.save_pretrained(tmp)
        VideoLLMProcessor(tokenizer, config).save_pretrained(tmp)
    return Path(dst)


def _tokenizer(src: Path):
    """The source's tokenizer with our placeholders, and how its chat template takes content.

    A template in transformers' multimodal list form (the processor's, in ``chat_template.json``,
    ``processor_config.json`` or ``chat_template.jinja``) is preferred over a plain-text one."""
    tokenizer = AutoTokenizer.from_pretrained(src)
    candidates = [
        json.loads((src / name).read_text()).get("chat_template")
        for name in ("chat_template.json", "processor_config.json")
        if (src / name).is_file()
    ]
    if (src / "chat_template.jinja").is_file():
        candidates.append((src / "chat_template.jinja").read_text())
    template = next((t for t in candidates if isinstance(t, str) and _takes_parts(tokenizer, t)), None)
    if template:
        tokenizer.chat_template = with_video_parts(tokenizer, template)
    prepare_tokenizer(tokenizer)
    return tokenizer, "parts" if template else "text"


IMAGE_LOOP = re.compile(
    r"\{%-?\s*for (\w+) in message\['content'\]\s*\|\s*selectattr\('type',\s*'equalto',\s*'image'\)\s*-?%\}(.*?)"
    r"\{%-?\s*endfor\s*-?%\}",
    re.S,
)


def with_video_parts(tokenizer, template: str) -> str:
    """``template``, laying out ``{"type": "video"}`` parts as ``<video>`` where an image LLM's template knows
    images only (LLaVA-1.5/NeXT: each image part becomes ``<image>``; a video part is then laid out the same way,
    with ``<video>``)."""
    if _renders_video(tokenizer, template):
        return template
    match = IMAGE_LOOP.search(template)
    if match:
        video_loop = match.group(0).replace("'image')", "'video')").replace("<image>", "<video>")
        patched = template[: match.end()] + video_loop + template[match.end() :]
        if _renders_video(tokenizer, patched):
            return patched
    raise ConfigError(
        "the source's chat template lays out images only, in a way vllm_i2v cannot extend to video "
        "parts; give the source a chat_template.jinja that renders {'type': 'video'} as <video>"
    )


def _renders_video(tokenizer, template: str) -> bool:
    probe = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "PROBE"}]}]
    return "<video>" in tokenizer.apply_chat_template(probe, chat_template=template, tokenize=False)


def _takes_parts(tokenizer, template: str) -> bool:
    """True if ``template`` lays out list content (``[{"type": "text", ...}]``) rather than printing it."""
    probe = [{"role": "user", "content": [{"type": "text", "text": "PROBE"}]}]
    try:
        text = tokenizer.apply_chat_template(probe, chat_template=template, tokenize=False)
    except Exception:  # a template that cannot take list content at all
        return False
    return "PROBE" in text and "'type'" not in text


def preprocessor_settings(src: Path) -> SimpleNamespace:
    """The source's video (or image) processor settings, read from its JSON files (no torchvision needed): the
    ``video_processor`` / ``image_processor`` entries of ``processor_config.json`` (what transformers 5 saves), or
    the older ``video_preprocessor_config.json`` / ``preprocessor_config.json``."""
    if (src / "processor_config.json").is_file():
        saved = json.loads((src / "processor_config.json").read_text())
        for key in ("video_processor", "image_processor"):
            if isinstance(saved.get(key), dict):
                return SimpleNamespace(**saved[key])
    for name in PREPROCESSOR_FILES:
        if (src / name).is_file():
            return SimpleNamespace(**json.loads((src / name).read_text()))
    raise CheckpointError(
        f"{src}: no processor settings (processor_config.json with an image_processor or video_processor, or "
        f"{' or '.join(PREPROCESSOR_FILES)}): how frames are resized and normalized is unknown"
    )


def _language_model(source, config, tokenizer):
    """A causal LM of the source's text config made of the source's own language model and LM head (moved, not
    copied); rows are added for placeholder tokens the tokenizer lacked, and never generated."""
    with torch.device("meta"):  # a skeleton: its parts are replaced by the source's below
        llm = AutoModelForCausalLM.from_config(config.text_config)
    setattr(llm, llm.base_model_prefix, source.model.language_model)
    llm.set_output_embeddings(source.get_output_embeddings())
    left = [name for name, param in llm.named_parameters() if param.is_meta]
    if left:
        raise CheckpointError(f"{type(llm).__name__} has parts the source does not: {left[:5]}")
    llm.generation_config = source.generation_config
    rows = llm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        added = list(range(rows, len(tokenizer)))
        llm.generation_config.suppress_tokens = sorted({*(llm.generation_config.suppress_tokens or []), *added})
    return llm


def _copy_mlp(source: torch.nn.Module, mlp: torch.nn.Sequential) -> None:
    """LLaVA's ``linear_1 -> act -> linear_2`` into our ``Sequential(Linear, act, Linear)`` (a missing bias: 0)."""
    for theirs, ours in ((source.linear_1, mlp[0]), (source.linear_2, mlp[2])):
        if ours.weight.shape != theirs.weight.shape:
            raise CheckpointError(
                f"projector shape {tuple(theirs.weight.shape)} does not fit {tuple(ours.weight.shape)}"
            )
        with torch.no_grad():
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias if theirs.bias is not None else torch.zeros_like(ours.bias))
