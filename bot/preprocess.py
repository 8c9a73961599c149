"""CLIP's image preprocessing in Pillow and numpy, without torch: fast, and usable in worker processes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# OpenAI CLIP's normalisation constants (transformers.image_utils.OPENAI_CLIP_MEAN/STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PixelSpec:
    """What a checkpoint's image processor does: shortest-edge resize, centre crop, normalise."""

    resize: int = 224
    crop: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resample: int = int(Image.Resampling.BICUBIC)

    @classmethod
    def from_processor(cls, processor: object) -> PixelSpec:
        """Read the settings of a transformers CLIP image processor."""
        size = _size_value(getattr(processor, "size", None), "shortest_edge", 224)
        crop = _size_value(getattr(processor, "crop_size", None), "height", size)
        mean = tuple(float(v) for v in (getattr(processor, "image_mean", None) or CLIP_MEAN))
        std = tuple(float(v) for v in (getattr(processor, "image_std", None) or CLIP_STD))
        resample = getattr(processor, "resample", None)
        resample = int(resample) if resample is not None else int(Image.Resampling.BICUBIC)
        return cls(resize=size, crop=crop, mean=mean, std=std, resample=resample)  # type: ignore[arg-type]


def _size_value(size: object, key: str, default: int) -> int:
    if size is None:
        return default
    if isinstance(size, int):
        return size
    value = size.get(key) if hasattr(size, "get") else getattr(size, key, None)
    return int(value) if value else default


def resized_size(width: int, height: int, shortest: int) -> tuple[int, int]:
    """Output (width, height) when the shortest edge becomes `shortest`, as transformers computes it."""
    if width <= height:
        return shortest, int(shortest * height / width)
    return int(shortest * width / height), shortest


def to_pixels(image: Image.Image, spec: PixelSpec) -> np.ndarray:
    """One RGB picture to a normalised float32 (3, crop, crop) array, matching CLIPImageProcessor."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    target = resized_size(width, height, spec.resize)
    if target != (width, height):
        image = image.resize(target, resample=spec.resample)
    array = np.asarray(image)
    top = (array.shape[0] - spec.crop) // 2
    left = (array.shape[1] - spec.crop) // 2
    if top < 0 or left < 0:  # only with a crop larger than the resize; pad like transformers' center_crop
        array = _pad_to(array, spec.crop)
        top = (array.shape[0] - spec.crop) // 2
        left = (array.shape[1] - spec.crop) // 2
    array = array[top : top + spec.crop, left : left + spec.crop]
    # Crop in uint8 first and write each channel straight into the channel-first result: no float copy of
    # the whole resized picture and no transpose copy (about a fifth of the time, same values).
    out = np.empty((3, spec.crop, spec.crop), dtype=np.float32)
    for channel in range(3):
        offset = np.float32(spec.mean[channel] * 255.0)
        np.subtract(array[..., channel], offset, out=out[channel], dtype=np.float32)
        out[channel] /= np.float32(spec.std[channel] * 255.0)
    return out


def _pad_to(array: np.ndarray, size: int) -> np.ndarray:
    height, width = array.shape[:2]
    new_h, new_w = max(height, size), max(width, size)
    padded = np.zeros((new_h, new_w, 3), dtype=array.dtype)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    padded[top : top + height, left : left + width] = array
    return padded


def batch_pixels(images: list[Image.Image], spec: PixelSpec) -> np.ndarray:
    """Several pictures to one (n, 3, crop, crop) float32 array."""
    if not images:
        return np.zeros((0, 3, spec.crop, spec.crop), dtype=np.float32)
    return np.stack([to_pixels(image, spec) for image in images])
