"""Frame preprocessing in torch, batched over frames, driven by the vision checkpoint's image-processor config.

transformers' fast image processors and its video processors need torchvision, which many users lack (and
which cannot be installed beside a CPU-only torch), so the resize / crop / rescale / normalize steps are
done here with ``torch.nn.functional.interpolate`` on the whole (T, H, W, 3) frame stack at once. The
parameters are read once from the checkpoint's image processor (:func:`preprocess_spec_from_processor`)
and stored in the VideoLLM config, so a saved checkpoint preprocesses exactly as it was built.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

# PIL resampling codes used in image-processor configs -> torch interpolate modes.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "bilinear", 4: "bilinear", 5: "bicubic"}
_RESAMPLE_CODE = {"nearest": 0, "bilinear": 2, "bicubic": 3}


@dataclass
class PreprocessSpec:
    """What to do to every frame. ``resize``: {"shortest_edge": s} or {"height": h, "width": w} or None."""

    resize: dict | None = field(default_factory=lambda: {"height": 224, "width": 224})
    crop: dict | None = None  # {"height": h, "width": w}
    resample: str = "bicubic"
    rescale_factor: float | None = 1 / 255
    mean: list[float] | None = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] | None = field(default_factory=lambda: [0.5, 0.5, 0.5])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PreprocessSpec:
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"unknown preprocessing keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**values)

    def output_size(self) -> tuple[int, int]:
        """(height, width) of every preprocessed frame; needs a crop or an exact resize."""
        if self.crop:
            return int(self.crop["height"]), int(self.crop["width"])
        if self.resize and "height" in self.resize:
            return int(self.resize["height"]), int(self.resize["width"])
        raise ConfigError(
            "preprocessing without a crop or an exact (height, width) resize gives frames of varying size"
        )


def preprocess_spec_from_processor(processor) -> PreprocessSpec:
    """Read resize / crop / rescale / normalize settings off a transformers image processor (any backend).

    SigLIP2's NaFlex processors resize each image to its own patch grid (``max_num_patches``); here every
    frame gets the largest square grid within that budget instead (aspect ratio not kept, as SigLIP v1 does),
    so that all frames and videos share one grid.
    """
    do = lambda name, default=True: bool(getattr(processor, name, default))  # noqa: E731
    resample = getattr(processor, "resample", None)
    resample = _RESAMPLE.get(int(getattr(resample, "value", resample) if resample is not None else 3), "bicubic")
    max_patches = getattr(processor, "max_num_patches", None)
    if max_patches is not None:
        side = math.isqrt(int(max_patches)) * int(processor.patch_size)
        resize, crop = {"height": side, "width": side}, None
    else:
        resize = _size_dict(processor, "size") if do("do_resize") else None
        crop = _size_dict(processor, "crop_size") if do("do_center_crop", False) else None
    return PreprocessSpec(
        resize=resize,
        crop=crop,
        resample=resample,
        rescale_factor=float(getattr(processor, "rescale_factor", 1 / 255)) if do("do_rescale") else None,
        mean=[float(x) for x in processor.image_mean] if do("do_normalize") else None,
        std=[float(x) for x in processor.image_std] if do("do_normalize") else None,
    )


def image_processor_config(spec: PreprocessSpec) -> dict:
    """A ``CLIPImageProcessor`` config that preprocesses as ``spec`` does."""
    config = {"image_processor_type": "CLIPImageProcessor", "do_convert_rgb": True}
    config.update(do_resize=spec.resize is not None, size=spec.resize, resample=_RESAMPLE_CODE[spec.resample])
    config.update(do_center_crop=spec.crop is not None, crop_size=spec.crop)
    config.update(do_rescale=spec.rescale_factor is not None, rescale_factor=spec.rescale_factor or 1 / 255)
    config.update(do_normalize=spec.mean is not None, image_mean=spec.mean, image_std=spec.std)
    return config


def _size_dict(processor, attribute: str) -> dict | None:
    """A processor's size setting (int, dict or SizeDict) as {"height", "width"} or {"shortest_edge"}."""
    size = getattr(processor, attribute, None)
    if size is None:
        return None
    if isinstance(size, int):
        return {"height": size, "width": size}
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    if get("height") and get("width"):
        return {"height": int(get("height")), "width": int(get("width"))}
    if get("shortest_edge"):
        return {"shortest_edge": int(get("shortest_edge"))}
    raise ConfigError(f"{type(processor).__name__}: unsupported {attribute} setting {size}")


class FramePreprocessor:
    """Turns uint8 frames (T, H, W, 3) into ``pixel_values`` (T, 3, h, w) float32 per a :class:`PreprocessSpec`."""

    def __init__(self, spec: PreprocessSpec):
        self.spec = spec
        self.output_size = spec.output_size()

    def __call__(self, frames) -> torch.Tensor:
        if isinstance(frames, np.ndarray):  # a read-only array (an image read by PIL) is copied, not shared
            frames = np.ascontiguousarray(frames) if frames.flags.writeable else np.array(frames)
        x = torch.as_tensor(frames)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {tuple(x.shape)}")
        spec = self.spec
        size = self._resized_size(*x.shape[1:3]) if spec.resize else tuple(x.shape[1:3])
        if size != tuple(x.shape[1:3]) and x.dtype == torch.uint8 and not torchvision_available():
            x = _pil_resize(x, size, spec.resample)  # transformers' processors here are PIL's: resample as PIL does
        x = x.permute(0, 3, 1, 2).float()
        if size != tuple(x.shape[-2:]):
            x = self._resize(x, size)
        if spec.crop:
            x = _center_crop(x, int(spec.crop["height"]), int(spec.crop["width"]))
        if spec.rescale_factor is not None:
            x = x * spec.rescale_factor
        if spec.mean is not None:
            mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
            std = torch.tensor(spec.std).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.contiguous()

    def map_box(self, box, height: int, width: int) -> tuple[float, float, float, float]:
        """A box ``(x0, y0, x1, y1)`` in pixels of a ``height`` x ``width`` frame, in pixels of that frame
        preprocessed (resized, then center-cropped, as ``__call__`` does), clipped to it."""
        out_h, out_w = self._resized_size(height, width) if self.spec.resize else (height, width)
        x0, y0, x1, y1 = (float(v) * scale for v, scale in zip(box, (out_w / width, out_h / height) * 2))
        if self.spec.crop:  # as _center_crop: padded to the crop where smaller, then its centre kept
            crop_h, crop_w = int(self.spec.crop["height"]), int(self.spec.crop["width"])
            pad_h, pad_w = max(crop_h - out_h, 0), max(crop_w - out_w, 0)
            dy = pad_h // 2 - (out_h + pad_h - crop_h) // 2
            dx = pad_w // 2 - (out_w + pad_w - crop_w) // 2
            x0, y0, x1, y1, out_h, out_w = x0 + dx, y0 + dy, x1 + dx, y1 + dy, crop_h, crop_w
        return max(x0, 0.0), max(y0, 0.0), min(x1, float(out_w)), min(y1, float(out_h))

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        resize = self.spec.resize
        if "shortest_edge" in resize:
            short = int(resize["shortest_edge"])
            scale = short / min(height, width)
            # as transformers' get_resize_output_image_size: the long side is truncated, the short side exact
            return (short, int(width * scale)) if height <= width else (int(height * scale), short)
        return int(resize["height"]), int(resize["width"])

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Resize as transformers' torchvision-backed processors do (antialiased, rounded to whole levels)."""
        mode = self.spec.resample
        antialias = mode in ("bilinear", "bicubic")
        out = F.interpolate(x, size=size, mode=mode, antialias=antialias, align_corners=False if antialias else None)
        return out.clamp_(0, 255).round_()  # PIL resamples uint8 images: match its rounding and range


def torchvision_available() -> bool:
    """Whether transformers' processors here are its torchvision ones (else its PIL ones)."""
    from importlib.util import find_spec

    return find_spec("torchvision") is not None


_PIL_FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3}


def _pil_resize(frames: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """uint8 frames ``(T, H, W, 3)`` resized by PIL, as transformers' PIL image processors resize them."""
    from PIL import Image

    height, width = size
    resized = [np.asarray(Image.fromarray(f.numpy()).resize((width, height), _PIL_FILTERS[mode])) for f in frames]
    return torch.from_numpy(np.stack(resized))


def _center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < height or w < width:  # pad like transformers does for images smaller than the crop
        pad_h, pad_w = max(height - h, 0), max(width - w, 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        h, w = x.shape[-2:]
    top, left = (h - height) // 2, (w - width) // 2
    return x[..., top : top + height, left : left + width]
