"""The only module that imports torch and transformers: texts and pictures to normalised float32 vectors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .errors import EncoderError, ModelLoadError
from .preprocess import PixelSpec, batch_pixels

log = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
# CLIP's text tower has 77 positions (config.text_config.max_position_embeddings); longer prompts are cut.
CLIP_CONTEXT_LENGTH = 77
# Config keys that change with the transformers version or the save location, not with the model.
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "torch_dtype", "dtype", "_commit_hash", "architectures"}


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU, unless `requested` (or CLIPBOT_DEVICE) names one."""
    requested = requested or os.environ.get("CLIPBOT_DEVICE") or None
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """fp16 on a GPU, fp32 on the CPU unless a precision is named."""
    names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision in names:
        return names[precision]
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; use auto, fp32, fp16 or bf16")
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def _canonical_config(config: dict) -> dict:
    return {
        key: _canonical_config(value) if isinstance(value, dict) else value
        for key, value in sorted(config.items())
        if key not in _VOLATILE_CONFIG_KEYS
    }


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the model's architecture and its projection weights: equal only for the same model."""
    digest = hashlib.sha256()
    digest.update(json.dumps(_canonical_config(model.config.to_dict()), sort_keys=True, default=str).encode())
    for name in ("text_projection", "visual_projection"):
        weight = getattr(model, name).weight.detach().to(device="cpu", dtype=torch.float32)
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()[:16]


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise each row in float32; all-zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _image_processor_class():
    """The Pillow CLIP processor: only its settings are read, so it needs no torchvision (transformers 5)."""
    try:
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil
    except ImportError:  # transformers 4
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor


@dataclass(frozen=True)
class EncoderInfo:
    """What a loaded encoder is: enough to check a store against it and to describe it."""

    model_id: str
    fingerprint: str
    dim: int
    device: str
    dtype: str
    image_size: int


class ClipEncoder:
    """CLIP text and image towers behind `encode_texts` and `encode_images`; every call blocks."""

    def __init__(self, model, tokenizer, pixel_spec: PixelSpec, model_id: str, device: torch.device) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pixel_spec = pixel_spec
        self.model_id = model_id
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.max_length = min(
            CLIP_CONTEXT_LENGTH, int(getattr(model.config.text_config, "max_position_embeddings", 77))
        )
        self._fingerprint = model_fingerprint(model)
        self._lock = threading.Lock()  # one forward pass at a time: concurrency here only thrashes the cores

    @classmethod
    def load(cls, model_id: str = DEFAULT_MODEL, *, device: str | None = None, precision: str = "auto") -> ClipEncoder:
        """Load a CLIP checkpoint by Hugging Face id or local path. Blocking: seconds to minutes."""
        from transformers import AutoTokenizer, CLIPModel
        from transformers.utils import logging as hf_logging

        chosen = pick_device(device)
        dtype = pick_dtype(chosen, precision)
        started = time.perf_counter()
        hf_logging.disable_progress_bar()
        try:
            model = CLIPModel.from_pretrained(model_id)
            tokenizer = AutoTokenizer.from_pretrained(model_id)
            processor = _image_processor_class().from_pretrained(model_id)
        except (OSError, ValueError) as error:
            raise ModelLoadError(
                f"Cannot load the CLIP model {model_id!r}: {str(error).splitlines()[0]} "
                "(set CLIPBOT_MODEL to a Hugging Face id you can download or to a local directory)."
            ) from error
        model.eval()
        encoder = cls(model, tokenizer, PixelSpec.from_processor(processor), model_id, chosen)
        model.to(device=chosen, dtype=dtype)
        encoder.dtype = dtype
        log.info(
            "loaded %s on %s (%s, dim %d) in %.1f s",
            model_id, chosen, str(dtype).removeprefix("torch."), encoder.dim, time.perf_counter() - started,
        )
        return encoder

    @property
    def dim(self) -> int:
        """Length of the embedding vectors."""
        return int(self.model.config.projection_dim)

    @property
    def info(self) -> EncoderInfo:
        """Identity of the loaded model."""
        return EncoderInfo(
            model_id=self.model_id,
            fingerprint=self._fingerprint,
            dim=self.dim,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            image_size=self.pixel_spec.crop,
        )

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Texts to (n, dim) normalised float32; prompts past 77 tokens are truncated. Blocking."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sorting by length keeps each batch's padding short; the result is put back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            tokens = self.tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            out[chunk] = self._forward_text(tokens["input_ids"], tokens["attention_mask"])
        return normalize_rows(out)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """RGB pictures to (n, dim) normalised float32. Blocking."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            self.encode_pixels(batch_pixels(list(images[start : start + batch_size]), self.pixel_spec))
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts)

    def encode_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Preprocessed (n, 3, H, W) pixels to (n, dim) normalised float32. Blocking."""
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        tensor = torch.as_tensor(pixels)
        try:
            with self._lock, torch.inference_mode():
                started = time.perf_counter()
                tensor = tensor.to(device=self.device, dtype=self.dtype, non_blocking=True)
                features = self.model.get_image_features(pixel_values=tensor).pooler_output
                result = features.float().cpu().numpy()
                log.debug("encoded %d images in %.1f ms", len(result), (time.perf_counter() - started) * 1e3)
        except RuntimeError as error:
            raise EncoderError(f"The image encoder failed: {error}") from error
        return normalize_rows(result)

    def _forward_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
        try:
            with self._lock, torch.inference_mode():
                started = time.perf_counter()
                features = self.model.get_text_features(
                    input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
                ).pooler_output
                result = features.float().cpu().numpy()
                log.debug("encoded %d texts in %.1f ms", len(result), (time.perf_counter() - started) * 1e3)
        except RuntimeError as error:
            raise EncoderError(f"The text encoder failed: {error}") from error
        return result
