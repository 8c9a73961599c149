"""The CLIP encoder on a tiny checkpoint made by the suite: the same from_pretrained paths as the real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bot.encoder import ClipEncoder, pick_device
from bot.errors import ModelLoadError
from tests.fixtures.models import make_tiny_clip


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder.load(str(tiny_clip_dir), device="cpu", precision="fp32")


def reference_image_vector(encoder: ClipEncoder, image: Image.Image) -> np.ndarray:
    """The tutorials' way: transformers' own processor, then get_image_features."""
    from bot.encoder import _image_processor_class

    processor = _image_processor_class().from_pretrained(encoder.model_id)
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        vector = encoder.model.get_image_features(pixel_values=pixels).pooler_output[0].numpy()
    return vector / np.linalg.norm(vector)


def test_loads_offline_and_describes_itself(encoder: ClipEncoder) -> None:
    info = encoder.info
    assert (info.dim, info.device, info.dtype, info.image_size) == (16, "cpu", "float32", 32)
    assert len(info.fingerprint) == 16


def test_texts_become_unit_float32_rows(encoder: ClipEncoder) -> None:
    vectors = encoder.encode_texts(["a red circle", "a blue square", "a dog in the snow"])
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_padding_to_the_longest_prompt_changes_nothing(encoder: ClipEncoder) -> None:
    alone = encoder.encode_texts(["a red circle"])[0]
    together = encoder.encode_texts(["a red circle", "a much longer prompt about a blue square in the snow"])[0]
    tokens = encoder.tokenizer(["a red circle"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.inference_mode():
        full = encoder.model.get_text_features(**tokens).pooler_output[0].numpy()
    full /= np.linalg.norm(full)
    np.testing.assert_allclose(alone, together, atol=1e-5)
    np.testing.assert_allclose(alone, full, atol=1e-5)


def test_order_is_kept_when_batches_are_sorted_by_length(encoder: ClipEncoder) -> None:
    texts = [f"{'very ' * (i % 7)}red circle number {i}" for i in range(40)]
    batched = encoder.encode_texts(texts, batch_size=8)
    singles = np.concatenate([encoder.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_prompts_past_77_tokens_are_truncated_not_rejected(encoder: ClipEncoder) -> None:
    long_prompt = "a red circle " * 200
    vector = encoder.encode_texts([long_prompt])[0]
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-5)


def test_images_match_transformers_own_preprocessing(encoder: ClipEncoder) -> None:
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in ((64, 48), (40, 90))]
    ours = encoder.encode_images(pictures)
    for picture, vector in zip(pictures, ours):
        assert float(vector @ reference_image_vector(encoder, picture)) > 0.9999


def test_any_mode_is_accepted(encoder: ClipEncoder) -> None:
    picture = Image.new("RGB", (40, 40), (200, 10, 10))
    vectors = encoder.encode_images([picture.convert("L"), picture.convert("RGBA"), picture.convert("CMYK")])
    assert vectors.shape == (3, 16)


def test_empty_inputs_give_empty_arrays(encoder: ClipEncoder) -> None:
    assert encoder.encode_texts([]).shape == (0, 16)
    assert encoder.encode_images([]).shape == (0, 16)


def test_fingerprint_tells_models_apart(tmp_path: Path, tiny_clip_dir: Path, encoder: ClipEncoder) -> None:
    assert ClipEncoder.load(str(tiny_clip_dir), precision="bf16").info.fingerprint == encoder.info.fingerprint
    other = make_tiny_clip(tmp_path / "other", seed=1)
    assert ClipEncoder.load(str(other)).info.fingerprint != encoder.info.fingerprint


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Cannot load the CLIP model .*set CLIPBOT_MODEL"):
        ClipEncoder.load(str(tmp_path / "no-such-model"))


def test_device_can_be_forced(monkeypatch) -> None:
    monkeypatch.setenv("CLIPBOT_DEVICE", "cpu")
    assert pick_device().type == "cpu"
    assert pick_device("cpu").type == "cpu"
