"""Models: vision tower, temporal projectors, the VideoLLM and its processor."""

from transformers import AutoConfig, AutoModel

from .builder import build_video_llm, load_llm
from .checkpoint import load_model
from .configuration import VideoLLMConfig
from .modeling import VideoLLM
from .processor import IGNORE_INDEX, VideoLLMProcessor
from .projectors import PROJECTORS

AutoConfig.register(VideoLLMConfig.model_type, VideoLLMConfig, exist_ok=True)
AutoModel.register(VideoLLMConfig, VideoLLM, exist_ok=True)

__all__ = [
    "IGNORE_INDEX",
    "PROJECTORS",
    "VideoLLM",
    "VideoLLMConfig",
    "VideoLLMProcessor",
    "build_video_llm",
    "load_llm",
    "load_model",
]
