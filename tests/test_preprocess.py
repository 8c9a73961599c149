"""Our numpy preprocessing must equal transformers' CLIP image processor."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bot.preprocess import PixelSpec, to_pixels


@pytest.mark.parametrize("size", [(320, 480), (500, 333), (224, 224), (100, 50), (33, 900)])
def test_matches_clip_image_processor(size: tuple[int, int]) -> None:
    from bot.encoder import _image_processor_class

    processor = _image_processor_class()()
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    expected = processor(images=image, return_tensors="np")["pixel_values"][0]
    ours = to_pixels(image, PixelSpec.from_processor(processor))
    assert ours.shape == expected.shape == (3, 224, 224)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_spec_reads_a_small_processor() -> None:
    from bot.encoder import _image_processor_class

    processor = _image_processor_class()(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    spec = PixelSpec.from_processor(processor)
    assert (spec.resize, spec.crop) == (32, 32)
