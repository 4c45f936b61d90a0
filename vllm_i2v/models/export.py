"""``vllm-i2v export --to llava-next-video``: a checkpoint in transformers' ``LlavaNextVideoForConditionalGeneration``
layout, the one vLLM and SGLang load and serve across GPUs — ``convert --from llava-next-video`` in reverse.

It fits when the parts are LLaVA-NeXT-Video's: a CLIP or SigLIP tower read at one layer with CLS dropped (a square
patch grid), the ``mlp`` projector (2 layers) with or without average/max pooling of the grid before it, and a
Llama, Mistral or Qwen2 LLM. LoRA is merged first. Anything else (other projectors, towers, time embeddings, CLS
kept) has no counterpart there and is refused with the reason. The export carries transformers' config, the
safetensors weights, the tokenizer with a chat template that takes transformers' multimodal list content, and the
processor's image and video settings in ``processor_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_path, respect_umask, write_text_atomic
from ..errors import CheckpointError
from .lora import merge_lora
from .preprocess import PreprocessSpec, image_processor_config

TOWERS = ("clip_vision_model", "siglip_vision_model")
LLMS = ("llama", "mistral", "qwen2")
POOL_MODES = {"avg": "average", "max": "max"}

# The LLM's own template, given transformers' multimodal list content: each message's parts become the text our
# processor renders (a <video> or <image> line, then the text), then the template runs unchanged.
PARTS_TO_TEXT = (
    "{%- set ns = namespace(messages=[]) -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set ns.messages = ns.messages + [message] -%}"
    "{%- else -%}{%- set text = namespace(value='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'video' -%}{%- set text.value = text.value + '<video>\\n' -%}"
    "{%- elif part['type'] == 'image' -%}{%- set text.value = text.value + '<image>\\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set text.value = text.value + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set ns.messages = ns.messages + [{'role': message['role'], 'content': text.value}] -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set messages = ns.messages -%}"
)


def unfit_reason(config) -> str | None:
    """Why a VideoLLM config has no LlavaNextVideo counterpart, or None when it has one."""
    tower, llm, projector = config.vision_config.model_type, config.text_config.model_type, config.projector
    if tower not in TOWERS:
        return f"its vision tower is a {tower}; LlavaNextVideo's is CLIP or SigLIP"
    if llm not in LLMS:
        return f"its LLM is a {llm}; exported LLMs are {', '.join(LLMS)}"
    if projector.get("type") != "mlp" or projector.get("mlp_depth", 2) != 2:
        depth = projector.get("mlp_depth", 2)
        return (
            f"its projector is {projector.get('type')} (depth {depth}); LlavaNextVideo's is the 2-layer mlp, "
            "optionally pooling the grid before it"
        )
    if config.vision_feature_select != "patch":
        return (
            "it keeps the CLS token (vision_feature_select: full); LlavaNextVideo's pooler reads the patch grid alone"
        )
    if config.vision_grid[0] != config.vision_grid[1]:
        height, width = config.vision_grid
        return f"its patch grid is {height}x{width}; LlavaNextVideo's pooler needs a square one"
    return None


def export_llava_next_video(src, dst) -> Path:
    """Write checkpoint ``src`` (any kind) in transformers' LlavaNextVideo layout at ``dst`` (atomically)."""
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    from .checkpoint import load_model
    from .configuration import VideoLLMConfig
    from .processor import VideoLLMProcessor
    from .validity import check_checkpoint

    if Path(dst).exists():
        raise CheckpointError(f"{dst}: already exists; export into a new folder")
    check_checkpoint(src)
    reason = unfit_reason(VideoLLMConfig.from_pretrained(src))  # before the weights load
    if reason:
        raise CheckpointError(f"{src}: cannot be exported to llava-next-video: {reason}")
    model, processor = load_model(src), VideoLLMProcessor.from_pretrained(src)
    merge_lora(model.language_model, 1.0)
    merge_lora(model.vision_tower.model, 1.0)
    config, tokenizer, llm = model.config, processor.tokenizer, model.language_model
    ids = [config.video_token_id, config.image_token_id]
    rows = llm.get_input_embeddings().weight.shape[0]
    if max(ids) >= rows:  # LlavaNextVideo embeds the placeholder ids: they need rows (never generated)
        llm.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
        llm.generation_config.suppress_tokens = sorted({*(llm.generation_config.suppress_tokens or []), *ids})
    settings = type(model.projector).resolve(config.projector)
    stride = settings["pool_stride"]
    grid = config.vision_grid[0]
    export_config = LlavaNextVideoConfig(
        vision_config=model.vision_tower.model.config.to_dict(),
        text_config=llm.config.to_dict(),
        video_token_index=config.video_token_id,
        image_token_index=config.image_token_id,
        projector_hidden_act=settings["act"],
        vision_feature_select_strategy="default",
        vision_feature_layer=config.vision_feature_layer,
        spatial_pool_mode=POOL_MODES[settings["pool_mode"]],
        spatial_pool_stride=stride,
        image_grid_pinpoints=[list(processor.frame_preprocessor.output_size)],
        image_seq_length=grid * grid,
        video_seq_length=(grid // stride) ** 2,
        tie_word_embeddings=bool(getattr(llm.config, "tie_word_embeddings", False)),
    )
    with torch.device("meta"):  # a skeleton: our modules are moved into it below
        out = LlavaNextVideoForConditionalGeneration(export_config)
    out.model.vision_tower = model.vision_tower.model
    out.model.language_model = llm.get_decoder()
    out.lm_head = llm.get_output_embeddings()
    out.model.multi_modal_projector.linear_1 = model.projector.mlp[0]
    out.model.multi_modal_projector.linear_2 = model.projector.mlp[2]
    out.model.image_newline = nn.Parameter(
        torch.zeros(llm.config.hidden_size, dtype=model.projector.mlp[0].weight.dtype)
    )
    left = [name for name, param in out.named_parameters() if param.is_meta]
    if left:
        raise CheckpointError(f"{src}: LlavaNextVideo has parts this model does not: {left[:5]}")
    out.generation_config = llm.generation_config
    if config.chat_content == "text":
        tokenizer.chat_template = PARTS_TO_TEXT + tokenizer.chat_template
    with atomic_path(dst) as tmp:
        out.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_text_atomic(tmp / "processor_config.json", json.dumps(processor_config(config, out), indent=2) + "\n")
        respect_umask(tmp)
    return Path(dst)


def processor_config(config, model) -> dict:
    """``processor_config.json`` as transformers 5 writes it for ``LlavaNextVideoProcessor``: the image and video
    processors' settings under ``image_processor`` / ``video_processor``."""
    frames = image_processor_config(PreprocessSpec.from_dict(config.vision_preprocess))
    frames.pop("image_processor_type")
    size = frames["crop_size"] or frames["size"]
    pinpoints = [
        [int(size.get("height", size.get("shortest_edge"))), int(size.get("width", size.get("shortest_edge")))]
    ]
    return {
        "processor_class": "LlavaNextVideoProcessor",
        "image_processor": {
            **frames,
            "image_processor_type": "LlavaNextImageProcessor",
            "image_grid_pinpoints": pinpoints,
        },
        "video_processor": {**frames, "video_processor_type": "LlavaNextVideoVideoProcessor"},
        "patch_size": model.config.vision_config.patch_size,
        "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1 if model.config.vision_config.model_type == "clip_vision_model" else 0,
        "image_token": "<image>",
        "video_token": "<video>",
    }
