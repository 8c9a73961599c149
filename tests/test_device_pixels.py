"""The GPU preprocessing arithmetic, run on the CPU: it must give the pixels that Pillow and `to_pixels` give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bot.device_pixels import clip_pixels, exact_bmm, jpeg_decoding_available, pad_batch, resampling_matrices
from bot.preprocess import PixelSpec, to_pixels

# Landscape, portrait, square, exactly the crop, a strong downscale and an upscale, in one padded batch.
SIZES = [(500, 375), (333, 500), (320, 320), (224, 224), (1200, 260), (160, 120)]


def _pictures(seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    pictures = []
    for width, height in SIZES:
        # Smooth gradients plus noise: flat areas alone would hide rounding differences.
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
        noisy = base + rng.normal(0, 40, base.shape)
        pictures.append(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)))
    return pictures


def _as_tensor(picture: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).contiguous()


# Bilinear upscaling lands on more exact half-way values, where a tie may round the other way: measured
# 1.3e-5 of the values one level off for bicubic (CLIP's filter) and 1.2e-3 for bilinear.
@pytest.mark.parametrize(
    ("resample", "flips"), [(Image.Resampling.BICUBIC, 1e-4), (Image.Resampling.BILINEAR, 1e-2)]
)
def test_batch_equals_pillow_preprocessing(resample: Image.Resampling, flips: float) -> None:
    spec = PixelSpec(resample=int(resample))
    pictures = _pictures()
    ours = clip_pixels([_as_tensor(p) for p in pictures], spec, torch.float32).numpy()
    expected = np.stack([to_pixels(p, spec) for p in pictures])
    assert ours.shape == expected.shape == (len(SIZES), 3, 224, 224)
    # In 0-255 units: Pillow's fixed-point rounding reproduced, bar a rare half-way tie (one level).
    levels = np.abs(ours - expected) * (np.asarray(spec.std) * 255.0)[None, :, None, None]
    assert levels.max() < 1.0 + 1e-3
    assert np.mean(levels > 0.5) < flips


def test_small_spec_and_a_picture_below_the_crop() -> None:
    spec = PixelSpec(resize=32, crop=32)
    pictures = _pictures(1)
    ours = clip_pixels([_as_tensor(p) for p in pictures], spec, torch.float32).numpy()
    np.testing.assert_allclose(ours, np.stack([to_pixels(p, spec) for p in pictures]), atol=0.02)
    with pytest.raises(ValueError, match="smaller than the crop"):
        clip_pixels(
            [torch.zeros((3, 10, 500), dtype=torch.uint8)], PixelSpec(resize=32, crop=64), torch.float32
        )


def test_resampling_rows_sum_to_one_within_each_picture() -> None:
    sizes, targets, offsets = np.array([500, 224, 1200]), np.array([298, 224, 1034]), np.array([37, 0, 405])
    matrices = resampling_matrices(
        sizes, targets, offsets, 224, 1200, int(Image.Resampling.BICUBIC), torch.device("cpu")
    )
    assert matrices.shape == (3, 224, 1200)
    np.testing.assert_allclose(matrices.sum(dim=-1).numpy(), 1.0, atol=1e-5)
    for index, size in enumerate(sizes):
        assert not matrices[index, :, size:].any()  # nothing reaches the padding
    # A same-size resize without an offset is the identity.
    assert torch.equal(matrices[1, :, :224], torch.eye(224))


def test_pad_batch_keeps_each_picture_in_its_corner() -> None:
    first, second = torch.full((3, 2, 5), 7, dtype=torch.uint8), torch.full((3, 4, 3), 9, dtype=torch.uint8)
    padded = pad_batch([first, second])
    assert padded.shape == (2, 3, 4, 5) and padded.dtype == torch.float16
    assert torch.equal(padded[0, :, :2, :5], first.half()) and not padded[0, :, 2:].any()
    assert torch.equal(padded[1, :, :4, :3], second.half()) and not padded[1, :, :, 3:].any()


def test_exact_bmm_on_the_cpu_is_a_float32_product() -> None:
    pixels = torch.randint(0, 256, (2, 5, 7), dtype=torch.uint8)
    weights = torch.rand(2, 7, 3)
    torch.testing.assert_close(exact_bmm(pixels, weights), torch.bmm(pixels.float(), weights))


def test_no_jpeg_decoding_without_cuda() -> None:
    assert not jpeg_decoding_available(torch.device("cpu"))
