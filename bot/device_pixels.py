"""JPEG bytes to CLIP pixels on a CUDA device: nvJPEG decoding, then Pillow's resize, crop and normalisation.

torch-only; torchvision is optional and imported only where JPEGs are decoded. The resampling is Pillow's own
(precompute_coeffs and its 8-bit fixed-point rounding), so the GPU path gives the pixels the CPU path gives.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .preprocess import PixelSpec, resized_size

# Strided nested tensors are a "prototype" API; the padding needs nothing more than that prototype offers.
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")

# Pillow's 8-bit resampling keeps its weights as fixed-point numbers with this many fraction bits.
_PIL_PRECISION_BITS = 22


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    """PIL's bicubic filter (a = -0.5)."""
    x = x.abs()
    near = (1.5 * x - 2.5) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * -0.5
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _bilinear(x: torch.Tensor) -> torch.Tensor:
    """PIL's bilinear (triangle) filter."""
    return (1 - x.abs()).clamp(min=0)


# PIL resample code -> (filter, support): Pillow's src/libImaging/Resample.c.
_FILTERS = {int(Image.Resampling.BICUBIC): (_bicubic, 2.0), int(Image.Resampling.BILINEAR): (_bilinear, 1.0)}


def jpeg_decoding_available(device: torch.device) -> bool:
    """Whether JPEGs can be decoded on `device`: CUDA with torchvision's nvJPEG (torchvision stays optional)."""
    if device.type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # missing, or a build for another torch that fails to load its operators
        return False
    return True


def decode_jpegs(blobs: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """JPEG bytes to (3, h, w) uint8 RGB tensors on `device`, in one batched nvJPEG call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def _to_device(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array on `device` without blocking: a pageable copy would wait for the whole stream."""
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def resampling_matrices(
    sizes: np.ndarray,
    targets: np.ndarray,
    offsets: np.ndarray,
    crop: int,
    padded: int,
    resample: int,
    device: torch.device,
) -> torch.Tensor:
    """(n, crop, padded) float32: row j of matrix i makes output pixel offsets[i] + j of a sizes[i] ->
    targets[i] antialiased resize, exactly as Pillow's precompute_coeffs does; columns past sizes[i] stay zero.

    The weights are computed for each output pixel's few taps only, (n, crop, taps), then scattered into the
    dense matrices: computing them over every padded column cost more GPU time than both resampling products.
    """
    kernel, support = _FILTERS[resample]
    host = np.stack([sizes, targets, offsets]).astype(np.float64)
    # Pillow's filter reaches `support * scale` source pixels either side of a centre (scale >= 1).
    taps = int(np.ceil(2 * support * np.maximum(host[0] / host[1], 1.0).max())) + 2
    size, target, offset = _to_device(host, device)[:, :, None, None]
    scale = size / target
    filterscale = scale.clamp(min=1.0)
    reach = support * filterscale
    wanted = torch.arange(crop, dtype=torch.float64, device=device)[None, :, None]
    center = (wanted + offset + 0.5) * scale
    first = torch.floor(center - reach + 0.5).clamp(min=0)
    last = torch.minimum(torch.floor(center + reach + 0.5), size)
    source = first + torch.arange(taps, dtype=torch.float64, device=device)
    weights = torch.where(source < last, kernel((source - center + 0.5) / filterscale), 0.0)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    unit = float(1 << _PIL_PRECISION_BITS)
    weights = (torch.round(weights * unit) / unit).float()
    # Taps past the picture carry weight 0, so clamping their column into the matrix adds nothing.
    columns = source.long().clamp_(max=padded - 1)
    dense = torch.zeros((len(sizes), crop, padded), dtype=torch.float32, device=device)
    return dense.scatter_add_(2, columns, weights)


_HALF_PRODUCTS: dict[str, bool] = {}
_HALF_PRODUCTS_LOCK = threading.Lock()


def _half_products(device: torch.device) -> bool:
    """Whether this build multiplies fp16 matrices into fp32 results (`bmm(..., out_dtype=)`, CUDA only)."""
    key = str(device)
    with _HALF_PRODUCTS_LOCK:
        if key not in _HALF_PRODUCTS:
            probe = torch.ones((1, 2, 2), dtype=torch.float16, device=device)
            try:
                _HALF_PRODUCTS[key] = device.type == "cuda" and bool(
                    torch.bmm(probe, probe, out_dtype=torch.float32).dtype == torch.float32
                )
            except (RuntimeError, TypeError, NotImplementedError):
                _HALF_PRODUCTS[key] = False
    return _HALF_PRODUCTS[key]


def exact_bmm(pixels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`pixels @ weights` in float32 for integer pixels 0-255 and 22-bit fixed-point weights.

    On CUDA it is two fp16 tensor-core products: the pixels are exact in fp16 and the weights are split into
    a high and a low fp16 part, which together keep 22 bits. A float32 product (no tensor cores) took several
    times longer than the model's forward pass on the same batch.
    """
    if not _half_products(pixels.device):
        return torch.bmm(pixels.float(), weights)
    high = weights.half()
    low = (weights - high.float()).half()
    values = pixels.half()
    return torch.bmm(values, high, out_dtype=torch.float32).add_(
        torch.bmm(values, low, out_dtype=torch.float32)
    )


def pad_batch(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """(3, h, w) uint8 pictures into one zero-padded (n, 3, max h, max w) float16 batch (exact for 0-255).

    A nested tensor pads the whole batch in a few kernels; a copy per picture cost 4.5 ms of launches for 256
    pictures on an H200, with the GIL held, while the model waited for its next batch.
    """
    nested = torch.nested.as_nested_tensor(list(images))
    return torch.nested.to_padded_tensor(nested.to(torch.float16), 0.0)


_NORMALISERS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _normaliser(spec: PixelSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's mean and std in 0-255 units on `device`, made once (each would otherwise be a blocking copy)."""
    key = (spec.mean, spec.std, str(device))
    if key not in _NORMALISERS:
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        _NORMALISERS[key] = (mean.to(device), std.to(device))
    return _NORMALISERS[key]


def clip_pixels(images: Sequence[torch.Tensor], spec: PixelSpec, dtype: torch.dtype) -> torch.Tensor:
    """(3, h, w) uint8 RGB pictures (one device) to CLIP's (n, 3, crop, crop) normalised pixels in `dtype`.

    Pictures of every size share one zero-padded batch; PIL's antialiased two-pass resampling becomes two
    batched matrix products with PIL's own weights, each pass rounded to 8 bits as PIL rounds it.
    Per-picture interpolate() calls cost ~8 kernel launches each and capped decoding at ~7,500 pictures/s.
    """
    if spec.resample not in _FILTERS:
        raise ValueError(f"no GPU resampling matches PIL resample {spec.resample}")
    crop = spec.crop
    heights = np.asarray([int(image.shape[1]) for image in images])
    widths = np.asarray([int(image.shape[2]) for image in images])
    targets = np.asarray([resized_size(int(w), int(h), spec.resize) for w, h in zip(widths, heights)])
    tops, lefts = (targets[:, 1] - crop) // 2, (targets[:, 0] - crop) // 2
    if tops.min() < 0 or lefts.min() < 0:
        raise ValueError("a picture is smaller than the crop")
    padded = pad_batch(images)
    count, _, height, width = padded.shape
    device = padded.device
    across = resampling_matrices(widths, targets[:, 0], lefts, crop, width, spec.resample, device)
    down = resampling_matrices(heights, targets[:, 1], tops, crop, height, spec.resample, device)
    # PIL's order: the horizontal pass, rounded to 8 bits, then the vertical pass, rounded again.
    rows = exact_bmm(padded.view(count, 3 * height, width), across.transpose(1, 2))
    rows = torch.floor_(rows.add_(0.5)).clamp_(0, 255)  # (n, 3 * height, crop): [channel, y, x']
    # The vertical pass works on columns: [channel, x', y] against the transposed vertical weights.
    columns = rows.view(count, 3, height, crop).transpose(2, 3).reshape(count, 3 * crop, height)
    pixels = torch.floor_(exact_bmm(columns, down.transpose(1, 2)).add_(0.5)).clamp_(0, 255)
    pixels = pixels.view(count, 3, crop, crop).transpose(2, 3)  # back to [channel, y', x']
    mean, std = _normaliser(spec, device)
    return ((pixels - mean) / std).to(dtype).contiguous()
