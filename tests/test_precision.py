"""Reduced precision: bf16 stays within cosine 0.999 of fp32; `auto` picks it only when faster and right.

The decision is tested with injected probe results, never with real timings: how fast a forward pass is
depends on the machine and on whatever else runs on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bot.encoder as encoder_module
from bot.encoder import MIN_COSINE, ClipEncoder, PrecisionProbe, choose_precision
from bot.prompts import readable_label
from tests.fixtures.shapes import CLASSES, make_pictures

PROMPTS = ["a red circle", "a blue square on grey", "a photo of a dog in the snow", "x"]


def pictures(count: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 48, 3), dtype=np.uint8)) for i in range(count)]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)  # both sides are unit rows


@pytest.fixture(scope="module")
def fp32(tiny_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder.load(str(tiny_clip_dir), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def bf16(tiny_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder.load(str(tiny_clip_dir), device="cpu", precision="bf16")


def favourable(**changes) -> PrecisionProbe:
    values = {"fp32_ms": 100.0, "bf16_ms": 50.0, "cosine": 0.9999}
    values.update(changes)
    return PrecisionProbe(**values)


# --- the decision, on injected measurements -----------------------------------------------------------


def test_bf16_is_chosen_when_faster_and_accurate() -> None:
    assert choose_precision(favourable()) == "bf16"


@pytest.mark.parametrize(
    "probe",
    [
        favourable(bf16_ms=150.0),  # slower
        favourable(bf16_ms=100.0),  # as fast
        favourable(bf16_ms=95.0),  # faster, but within the probe's noise
        favourable(cosine=0.998),  # faster, but not accurate enough
        favourable(cosine=float("nan")),  # a broken probe is not a pass
        favourable(fp32_ms=1.0, bf16_ms=0.2),  # a forward pass this short has nothing to win
    ],
    ids=["slower", "equal", "within-noise", "inaccurate", "nan", "too-small-to-matter"],
)
def test_auto_never_picks_a_slower_or_inaccurate_path(probe: PrecisionProbe) -> None:
    assert choose_precision(probe) == "fp32"


def test_no_probe_means_fp32() -> None:
    assert choose_precision(None) == "fp32"


# --- the load path, with the probe replaced -------------------------------------------------------------


@pytest.fixture
def probe_says(monkeypatch):
    """Make `auto` see a bf16-capable CPU, a model big enough to probe, and the given probe result."""
    calls: list[int] = []

    def install(probe: PrecisionProbe) -> list[int]:
        monkeypatch.setattr(encoder_module, "bf16_supported", lambda: True)
        monkeypatch.setattr(encoder_module, "PROBE_MIN_PARAMETERS", 0)
        monkeypatch.delenv("CLIPBOT_PRECISION", raising=False)

        def fake_probe(model, candidate, tokenizer, image_size, repeats=3):
            calls.append(image_size)
            return probe

        monkeypatch.setattr(encoder_module, "probe_precision", fake_probe)
        return calls

    return install


def test_auto_loads_bf16_when_the_probe_favours_it(probe_says, tiny_clip_dir, fp32) -> None:
    calls = probe_says(favourable())
    encoder = ClipEncoder.load(str(tiny_clip_dir), device="cpu")
    assert calls and encoder.info.dtype == "bfloat16"
    assert next(encoder.model.parameters()).dtype == torch.bfloat16
    # The fingerprint is the fp32 checkpoint's, so stores built in fp32 still load under bf16.
    assert encoder.info.fingerprint == fp32.info.fingerprint


def test_auto_keeps_fp32_when_the_probe_disfavours_it(probe_says, tiny_clip_dir) -> None:
    probe_says(favourable(cosine=0.99))
    encoder = ClipEncoder.load(str(tiny_clip_dir), device="cpu")
    assert encoder.info.dtype == "float32" and next(encoder.model.parameters()).dtype == torch.float32


def test_auto_does_not_probe_without_native_bf16(probe_says, monkeypatch, tiny_clip_dir) -> None:
    calls = probe_says(favourable())
    monkeypatch.setattr(encoder_module, "bf16_supported", lambda: False)
    assert ClipEncoder.load(str(tiny_clip_dir), device="cpu").info.dtype == "float32"
    assert calls == []


def test_auto_does_not_probe_test_sized_models(probe_says, monkeypatch, tiny_clip_dir) -> None:
    calls = probe_says(favourable())
    monkeypatch.setattr(encoder_module, "PROBE_MIN_PARAMETERS", 20_000_000)
    assert ClipEncoder.load(str(tiny_clip_dir), device="cpu").info.dtype == "float32"
    assert calls == []


@pytest.mark.parametrize(("setting", "dtype"), [("fp32", "float32"), ("bf16", "bfloat16")])
def test_clipbot_precision_overrides_auto(probe_says, monkeypatch, tiny_clip_dir, setting, dtype) -> None:
    calls = probe_says(favourable() if setting == "fp32" else favourable(cosine=0.5))
    monkeypatch.setenv("CLIPBOT_PRECISION", setting)
    assert ClipEncoder.load(str(tiny_clip_dir), device="cpu").info.dtype == dtype
    assert calls == []


# --- accuracy of the real bf16 path ---------------------------------------------------------------------


def test_bf16_reports_its_real_dtype_and_the_fp32_fingerprint(fp32, bf16) -> None:
    assert (fp32.info.dtype, bf16.info.dtype) == ("float32", "bfloat16")
    assert bf16.info.fingerprint == fp32.info.fingerprint


def test_bf16_text_and_image_vectors_stay_within_cosine_0999(fp32, bf16) -> None:
    # The tiny random model gives about 0.99995 here, as ViT-B/32 with random weights does: bf16 keeps 8 bits
    # of mantissa, and normalisation layers and the fp32 accumulation in oneDNN's matmuls keep the error from
    # growing with depth. Outputs come back as float32 and unit length whatever the model's dtype.
    texts32, texts16 = fp32.encode_texts(PROMPTS), bf16.encode_texts(PROMPTS)
    images32, images16 = fp32.encode_images(pictures()), bf16.encode_images(pictures())
    assert texts16.dtype == images16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts16, axis=1), 1.0, atol=1e-5)
    assert cosines(texts32, texts16).min() >= MIN_COSINE
    assert cosines(images32, images16).min() >= MIN_COSINE


def test_the_probe_compares_real_forward_passes(fp32) -> None:
    candidate = encoder_module.bf16_copy(fp32.model)
    probe = encoder_module.probe_precision(
        fp32.model, candidate, fp32.tokenizer, fp32.pixel_spec.crop, repeats=1
    )
    assert probe.fp32_ms > 0 and probe.bf16_ms > 0
    assert probe.cosine >= MIN_COSINE


def test_the_bf16_copy_leaves_the_fp32_model_alone(fp32, bf16) -> None:
    candidate = encoder_module.bf16_copy(fp32.model)
    assert next(fp32.model.parameters()).dtype == torch.float32
    assert all(p.dtype == torch.bfloat16 for p in candidate.parameters())
    assert not any(
        a.data_ptr() == b.data_ptr() for a, b in zip(candidate.parameters(), fp32.model.parameters())
    )
    # The same weights as converting the model itself, which is what precision="bf16" does.
    assert all(torch.equal(a, b) for a, b in zip(candidate.parameters(), bf16.model.parameters()))


@pytest.mark.slow
def test_bf16_keeps_the_known_answers(shapes_clip_dir: Path) -> None:
    """The trained shapes CLIP ranks captions for fresh pictures the same way in bf16 as in fp32."""
    full = ClipEncoder.load(str(shapes_clip_dir), device="cpu", precision="fp32")
    half = ClipEncoder.load(str(shapes_clip_dir), device="cpu", precision="bf16")
    captions = [f"a photo of a {readable_label(name)}" for name in CLASSES]
    shots = [picture for picture, _ in make_pictures(2, seed=2024)]
    rankings = []
    for encoder in (full, half):
        scores = encoder.encode_images(shots) @ encoder.encode_texts(captions).T
        rankings.append(np.argsort(-scores, axis=1, kind="stable")[:, :3])
        assert encoder.info.dtype in ("float32", "bfloat16")
    assert np.array_equal(rankings[0][:, 0], rankings[1][:, 0])
    assert (rankings[0] == rankings[1]).mean() >= 0.95
