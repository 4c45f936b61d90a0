"""vllm_i2v: turn an image-language foundation model into a video chat model."""

__version__ = "0.1.0"
