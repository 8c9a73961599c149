"""CLIP through transformers (the only module that imports it): texts and pictures to normalised float32 vectors."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

# libgomp's threads spin between parallel regions by default. When anything else wants the cores (the bot's
# own threads decoding uploads, other processes) a forward pass keeps waiting on descheduled spinners: a prompt
# took 1.3 s instead of 20 ms on a busy 2-core machine (docs/BENCHMARKS.md). Passive threads sleep instead.
# OpenMP reads this once, when torch loads it: it must be set before `import torch`; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# A prompt batch tokenises in well under a millisecond; a Rust thread pool for it would only compete with
# torch's threads for the cores (the benchmarks run with the same setting).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from PIL import Image

from .device_pixels import clip_pixels, decode_jpegs, jpeg_decoding_available
from .errors import EncoderError, ModelLoadError
from .preprocess import PixelSpec, batch_pixels

log = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
# CLIP's text tower has 77 positions (config.text_config.max_position_embeddings); longer prompts are cut.
CLIP_CONTEXT_LENGTH = 77
# Reduced precision must keep every embedding this close (cosine) to the fp32 one.
MIN_COSINE = 0.999
# bf16 must beat fp32 by this factor in the load-time probe: a smaller gap is within the probe's noise.
MIN_SPEEDUP = 1.15
# An fp32 forward pass shorter than this leaves nothing for bf16 to win.
PROBE_MIN_MS = 5.0
# Below this many parameters (test-sized models; ViT-B/32 has 151M) per-op overhead, not arithmetic, sets the
# speed: bf16 cannot win, and on a busy machine a timing probe that short is noise. Such models stay fp32.
PROBE_MIN_PARAMETERS = 20_000_000
PROBE_PROMPTS = ("a photo of a dog", "a red circle on a grey background", "two people riding bicycles at sunset")
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


def bf16_supported() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class PrecisionProbe:
    """One fp32-against-bf16 measurement: best forward times (text + picture) and the worst cosine."""

    fp32_ms: float
    bf16_ms: float
    cosine: float


def choose_precision(probe: PrecisionProbe | None) -> str:
    """Pick "bf16" only where the probe shows it faster by MIN_SPEEDUP and within MIN_COSINE; else "fp32"."""
    if probe is None or not probe.cosine >= MIN_COSINE or probe.fp32_ms < PROBE_MIN_MS:
        return "fp32"
    return "bf16" if probe.bf16_ms * MIN_SPEEDUP <= probe.fp32_ms else "fp32"


def pooled(output) -> torch.Tensor:
    """The projected features of `get_*_features`: a tensor (transformers 4) or an output's pooler_output (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A bfloat16 twin of `model` that shares nothing with it; only the bf16 weights are allocated.

    deepcopy() of the fp32 model first would hold a second fp32 copy at the peak (ViT-B/32: +600 MB).
    """
    memo: dict[int, object] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        converted = tensor.detach().to(torch.bfloat16) if tensor.is_floating_point() else tensor.detach().clone()
        memo[id(tensor)] = torch.nn.Parameter(converted, requires_grad=False) if isinstance(
            tensor, torch.nn.Parameter) else converted
    return copy.deepcopy(model, memo)


def probe_precision(model, candidate, tokenizer, image_size: int, repeats: int = 3) -> PrecisionProbe:
    """Time fp32 `model` against its bf16 `candidate` on one prompt and one picture, and compare outputs. Blocking."""
    tokens = tokenizer(list(PROBE_PROMPTS), padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, image_size, image_size, generator=generator)
    one_text = {key: value[:1] for key, value in tokens.items()}

    def run(net, dtype, text, images) -> tuple[torch.Tensor, torch.Tensor]:
        text_out = pooled(net.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"]))
        image_out = pooled(net.get_image_features(pixel_values=images.to(dtype)))
        return text_out.float(), image_out.float()

    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    with torch.inference_mode():
        reference = run(model, torch.float32, tokens, pixels)
        reduced = run(candidate, torch.bfloat16, tokens, pixels)  # also the warm-up of the bf16 kernels
        cosine = min(
            float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min()) for a, b in zip(reference, reduced)
        )
        # Interleaved, best of `repeats`: other processes on the machine slow both alike.
        for _ in range(repeats):
            for net, dtype in ((model, torch.float32), (candidate, torch.bfloat16)):
                started = time.perf_counter()
                run(net, dtype, one_text, pixels[:1])
                best[dtype] = min(best[dtype], (time.perf_counter() - started) * 1e3)
    return PrecisionProbe(fp32_ms=best[torch.float32], bf16_ms=best[torch.bfloat16], cosine=cosine)


# Host threads that decode and resample JPEG chunks ahead of the model, and how many chunks they may run ahead.
DECODE_THREADS = 4
DECODE_AHEAD = 8


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
        self._jpeg_on_device: bool | None = None
        self._lock = threading.Lock()  # one forward pass at a time: concurrency here only thrashes the cores

    @classmethod
    def load(cls, model_id: str = DEFAULT_MODEL, *, device: str | None = None, precision: str = "auto") -> ClipEncoder:
        """Load a CLIP checkpoint by Hugging Face id or local path. Blocking: seconds to minutes."""
        from transformers import AutoTokenizer, CLIPModel
        from transformers.utils import logging as hf_logging

        chosen = pick_device(device)
        if precision == "auto":
            precision = os.environ.get("CLIPBOT_PRECISION") or "auto"
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
        # The fingerprint is taken here, from the checkpoint's own (fp32) weights, before any conversion.
        encoder = cls(model, tokenizer, PixelSpec.from_processor(processor), model_id, chosen)
        if precision == "auto" and chosen.type == "cpu":
            dtype = encoder._auto_cpu_dtype()
        encoder.model.to(device=chosen, dtype=dtype)
        encoder.dtype = dtype
        log.info(
            "loaded %s on %s (%s, dim %d) in %.1f s",
            model_id, chosen, str(dtype).removeprefix("torch."), encoder.dim, time.perf_counter() - started,
        )
        return encoder

    def _auto_cpu_dtype(self) -> torch.dtype:
        """bf16 where the probe finds it faster and as accurate on this CPU, else fp32; swaps in the bf16 model."""
        if not bf16_supported():
            log.info("precision auto: fp32 (this CPU has no native bfloat16)")
            return torch.float32
        parameters = sum(p.numel() for p in self.model.parameters())
        if parameters < PROBE_MIN_PARAMETERS:
            log.info("precision auto: fp32 (a %.1fM-parameter model gains nothing from bf16)", parameters / 1e6)
            return torch.float32
        candidate = bf16_copy(self.model)
        probe = probe_precision(self.model, candidate, self.tokenizer, self.pixel_spec.crop)
        choice = choose_precision(probe)
        log.info(
            "precision auto: %s (probe: fp32 %.1f ms, bf16 %.1f ms, cosine %.5f)",
            choice, probe.fp32_ms, probe.bf16_ms, probe.cosine,
        )
        if choice != "bf16":
            return torch.float32
        self.model = candidate  # the fp32 weights are freed with the last reference to them
        return torch.bfloat16

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
                features = pooled(self.model.get_image_features(pixel_values=tensor))
                result = features.float().cpu().numpy()
                log.debug("encoded %d images in %.1f ms", len(result), (time.perf_counter() - started) * 1e3)
        except RuntimeError as error:
            log.error("image encoder failed: %s", error)
            raise EncoderError("The image encoder failed on this picture; please try again.") from error
        return normalize_rows(result)

    @property
    def decodes_jpeg(self) -> bool:
        """Whether `encode_jpegs` can decode on this encoder's device (a CUDA GPU with torchvision)."""
        if self._jpeg_on_device is None:
            self._jpeg_on_device = jpeg_decoding_available(self.device)
        return self._jpeg_on_device

    def encode_jpegs(self, blobs: Sequence[bytes], batch_size: int = 256) -> np.ndarray:
        """JPEG bytes to (n, dim) normalised float32, decoded, preprocessed and encoded on the GPU. Blocking.

        Raises EncoderError for any picture nvJPEG cannot decode; callers then use the CPU path.
        """
        if not blobs:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not self.decodes_jpeg:
            raise EncoderError("JPEG decoding on the device needs a CUDA GPU and torchvision.")
        from concurrent.futures import ThreadPoolExecutor

        chunks = [blobs[i : i + batch_size] for i in range(0, len(blobs), batch_size)]
        try:
            with self._lock, torch.inference_mode(), ThreadPoolExecutor(DECODE_THREADS) as pool:
                started = time.perf_counter()
                # Host threads decode and resample the next chunks (nvJPEG's CPU stage, kernel launches) while
                # this one runs the model: 7,300 -> 8,600 pictures/s on an H200. A window bounds GPU memory.
                pending = [pool.submit(self._device_pixels, chunk) for chunk in chunks[:DECODE_AHEAD]]
                features = []
                for index in range(len(chunks)):
                    pixels = pending[index].result()
                    if index + DECODE_AHEAD < len(chunks):
                        pending.append(pool.submit(self._device_pixels, chunks[index + DECODE_AHEAD]))
                    features.append(pooled(self.model.get_image_features(pixel_values=pixels)))
                result = torch.nn.functional.normalize(torch.cat(features).float(), dim=-1).cpu().numpy()
                log.debug("decoded and encoded %d JPEGs in %.1f ms", len(result), (time.perf_counter() - started) * 1e3)
        except (RuntimeError, ValueError) as error:
            raise EncoderError(f"Decoding or encoding JPEGs on {self.device} failed: {error}") from error
        return result

    @torch.inference_mode()
    def _device_pixels(self, blobs: Sequence[bytes]) -> torch.Tensor:
        """nvJPEG decoding and CLIP preprocessing of one chunk, queued on the device's current stream.

        Per-thread side streams, and a stream of its own for the model, measured 4-6% slower on an H200
        (docs/BENCHMARKS.md): the host threads, not the GPU's queue, set the pace.
        """
        return clip_pixels(decode_jpegs(blobs, self.device), self.pixel_spec, self.dtype)

    def _forward_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
        try:
            with self._lock, torch.inference_mode():
                started = time.perf_counter()
                features = pooled(self.model.get_text_features(
                    input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
                ))
                result = features.float().cpu().numpy()
                log.debug("encoded %d texts in %.1f ms", len(result), (time.perf_counter() - started) * 1e3)
        except RuntimeError as error:
            log.error("text encoder failed: %s", error)
            raise EncoderError("The text encoder failed on this prompt; please try again.") from error
        return result
