"""``VideoLLMConfig``: the vision tower's config, the projector's settings and the LLM's config, in one file."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from ..errors import ConfigError
from .preprocess import PreprocessSpec
from .projectors import DEFAULT_PROJECTOR, FeatureLayout, projector_class

CHAT_CONTENT = ("text", "parts")


class VideoLLMConfig(PreTrainedConfig):
    r"""
    vision_config: config of any transformers vision model (``clip_vision_model``, ``siglip_vision_model``,
        ``dinov2``...).
    text_config: config of any transformers causal LM.
    projector: ``{"type": "stpool" | "adapool" | "qformer" | "mlp" | "slowfast", ...settings}``.
    vision_feature_layer: hidden-state index read from the tower (-2: penultimate, as LLaVA).
    vision_feature_select: ``patch`` drops CLS/register tokens, ``full`` keeps them.
    vision_preprocess: a :class:`PreprocessSpec` as a dict (resize, crop, rescale, normalize).
    vision_grid / vision_prefix_tokens: the tower's patch grid and prefix-token count at that input size.
    vision_lora / llm_lora: LoRA settings (peft ``LoraConfig`` fields) on the vision tower / the LLM, or None.
    video_token / image_token and their ids: chat placeholders, replaced by visual tokens.
    num_frames: frames sampled per video by default.
    chat_content: how the chat template takes message content: ``text`` (a string with placeholders, as LLM
        tokenizers' templates do) or ``parts`` (transformers' multimodal list, as LLaVA-family processors' do).
    independent_turns: the model was trained on each question as its own conversation about the visuals
        (``data.independent_turns``), never with an earlier turn in its prompt: chat then asks it that way too.
    """

    model_type = "vllm_i2v"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}
    default_model_types = {"vision_config": "clip_vision_model", "text_config": "llama"}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector: dict | None = None
    vision_feature_layer: int = -2
    vision_feature_select: str = "patch"
    vision_preprocess: dict | None = None
    vision_grid: list[int] | None = None
    vision_prefix_tokens: int = 0
    vision_lora: dict | None = None
    llm_lora: dict | None = None
    video_token: str = "<video>"
    image_token: str = "<image>"
    video_token_id: int | None = None
    image_token_id: int | None = None
    num_frames: int = 8
    chat_content: str = "text"
    independent_turns: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        for key, default_type in self.default_model_types.items():  # dicts (as in config.json) -> config objects
            value = getattr(self, key)
            if value is None or isinstance(value, dict):
                value = dict(value or {})
                setattr(self, key, CONFIG_MAPPING[value.pop("model_type", default_type)](**value))
        super().__post_init__(**kwargs)
        if self.projector is None:
            self.projector = dict(DEFAULT_PROJECTOR)
        projector_class(self.projector).resolve(self.projector)  # unknown name or setting: fail now
        if self.chat_content not in CHAT_CONTENT:
            raise ConfigError(f"chat_content must be one of {CHAT_CONTENT}, got {self.chat_content!r}")
        if self.vision_preprocess is None:
            self.vision_preprocess = PreprocessSpec().to_dict()
        # The LLM's own tying (e.g. SmolLM2 ties lm_head to the embeddings) is applied inside it.
        self.tie_word_embeddings = False

    @property
    def feature_layout(self) -> FeatureLayout:
        """Shape of the per-frame features the projector reads."""
        grid_h, grid_w = self.vision_grid
        prefix = self.vision_prefix_tokens if self.vision_feature_select == "full" else 0
        return FeatureLayout(grid_h, grid_w, prefix)

    def num_visual_tokens(self, num_frames: int) -> int:
        """Visual tokens the projector produces for a clip of ``num_frames`` frames (1 for an image)."""
        cls = projector_class(self.projector)
        return cls.count_tokens(cls.resolve(self.projector), self.feature_layout, num_frames)

    @property
    def context_length(self) -> int | None:
        """The LLM's maximum sequence length, when its config declares one."""
        return getattr(self.text_config, "max_position_embeddings", None)
