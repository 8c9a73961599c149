"""Building on a GPU: the tutorial loop, fp16 batched encoding, JPEG bytes to embeddings with nvJPEG decoding.

Without CUDA (or without torchvision) every stage that needs it is reported as skipped and the rest runs small
on the CPU, so the script's logic can be checked anywhere before it spends device time.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bot.build import BuildOptions, StoreBuilder, prepare_item
from bot.encoder import ClipEncoder, pooled
from bot.images import open_image
from bot.preprocess import to_pixels

from .common import Context, Row, bench_model, photo_like

log = logging.getLogger(__name__)

BATCH = 256
TUTORIAL_SAMPLE = 200
BASE_PICTURES = 64
# The bar for JPEG bytes to embeddings on an H100/H200.
TARGET_IMAGES_PER_S = 10_000


def _variant(task: tuple[int, int]) -> bytes:
    """One JPEG of 320-500 px: a random crop of a base picture, resized and re-encoded (cheap to make)."""
    index, seed = task
    rng = np.random.default_rng(seed * 7_919 + index)
    base = _BASES[index % len(_BASES)]
    width, height = base.size
    crop_w, crop_h = int(rng.integers(width // 2, width)), int(rng.integers(height // 2, height))
    x, y = int(rng.integers(0, width - crop_w)), int(rng.integers(0, height - crop_h))
    long_side, short_side = int(rng.integers(400, 501)), int(rng.integers(320, 400))
    size = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
    picture = base.crop((x, y, x + crop_w, y + crop_h)).resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=int(rng.integers(80, 93)))
    return buffer.getvalue()


_BASES: list[Image.Image] = []


def _init_bases(seed: int) -> None:
    _BASES[:] = [photo_like(640, 480, seed=seed * 1000 + i) for i in range(BASE_PICTURES)]


def jpeg_corpus(count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct photo-like JPEGs, made in parallel on every core."""
    workers = max(1, min(32, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, initializer=_init_bases, initargs=(seed,)) as pool:
        return list(pool.map(_variant, [(i, seed) for i in range(count)], chunksize=256))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def tutorial_rate(model_dir: Path, blobs: list[bytes], device: torch.device) -> float:
    """The tutorial loop on the device: decode, CLIPProcessor, fp32 get_image_features, one at a time."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_dir).eval().to(device)
    processor = CLIPProcessor.from_pretrained(model_dir)

    def one(blob: bytes) -> np.ndarray:
        inputs = processor(images=Image.open(io.BytesIO(blob)).convert("RGB"), return_tensors="pt").to(device)
        with torch.no_grad():
            vector = pooled(model.get_image_features(**inputs))[0].cpu().numpy()
        return vector / np.linalg.norm(vector)

    for blob in blobs[:5]:
        one(blob)
    started = time.perf_counter()
    for blob in blobs:
        one(blob)
    return len(blobs) / (time.perf_counter() - started)


def encode_only_rate(encoder: ClipEncoder, batches: int) -> float:
    """fp16 (or the CPU's precision) batched encoding of pixels already on the device."""
    spec = encoder.pixel_spec
    pixels = torch.randn(BATCH, 3, spec.crop, spec.crop, device=encoder.device)
    encoder.encode_pixels(pixels)
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_pixels(pixels)
    return batches * BATCH / (time.perf_counter() - started)


def device_decode_rate(encoder: ClipEncoder, blobs: list[bytes]) -> float:
    """nvJPEG decode and CLIP preprocessing on the GPU alone."""
    encoder._device_pixels(blobs[:BATCH])
    _sync(encoder.device)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(blobs), BATCH):
            encoder._device_pixels(blobs[start : start + BATCH])
    _sync(encoder.device)
    return len(blobs) / (time.perf_counter() - started)


def end_to_end_rate(encoder: ClipEncoder, blobs: list[bytes], chunk: int = 2048) -> float:
    """JPEG bytes to normalised float32 vectors on the host, in chunks, through `encode_jpegs`."""
    encoder.encode_jpegs(blobs[:BATCH])
    started = time.perf_counter()
    for start in range(0, len(blobs), chunk):
        encoder.encode_jpegs(blobs[start : start + chunk], batch_size=BATCH)
    return len(blobs) / (time.perf_counter() - started)


def decode_only_rate(encoder: ClipEncoder, blobs: list[bytes]) -> float:
    """torchvision's batched nvJPEG decode alone, to split decoding from preprocessing."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(part: list[bytes]) -> list[torch.Tensor]:
        data = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in part]
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=encoder.device)

    decode(blobs[:BATCH])
    _sync(encoder.device)
    started = time.perf_counter()
    for start in range(0, len(blobs), BATCH):
        decode(blobs[start : start + BATCH])
    _sync(encoder.device)
    return len(blobs) / (time.perf_counter() - started)


def cpu_decode_rate(encoder: ClipEncoder, blobs: list[bytes]) -> float:
    """The CPU path for comparison: PIL decode and numpy preprocessing on every core, batched encoding."""
    workers = max(1, min(32, os.cpu_count() or 1))
    spec = encoder.pixel_spec
    # forkserver: these workers start clean instead of as forks of a process that holds a CUDA context, and
    # they import only bot.build (no torch), where the picture work lives.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bot.build"])
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        list(
            pool.map(prepare_item, blobs[:workers], repeat(0), repeat(spec), chunksize=1)
        )  # start the workers
        started = time.perf_counter()
        batch: list[np.ndarray] = []
        for item in pool.map(prepare_item, blobs, repeat(0), repeat(spec), chunksize=32):
            batch.append(item.pixels)
            if len(batch) == BATCH:
                encoder.encode_pixels(np.stack(batch))
                batch = []
        if batch:
            encoder.encode_pixels(np.stack(batch))
        return len(blobs) / (time.perf_counter() - started)


def agreement(encoder: ClipEncoder, blobs: list[bytes]) -> float:
    """Least cosine between GPU-decoded and PIL-decoded embeddings of the same files."""
    gpu = encoder.encode_jpegs(blobs)
    cpu = encoder.encode_pixels(np.stack([to_pixels(open_image(blob), encoder.pixel_spec) for blob in blobs]))
    return float(np.min(np.sum(gpu * cpu, axis=1)))


def builder_rate(encoder: ClipEncoder, blobs: list[bytes], root: Path) -> tuple[float, float]:
    """A whole StoreBuilder run over an image folder of the corpus (datasets, workers, thumbnails, chunks)."""
    folder = root / "gpu-pictures"
    if folder.exists():
        shutil.rmtree(folder)
    for index, blob in enumerate(blobs):
        directory = folder / f"class_{index % 10:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{index:06d}.jpg").write_bytes(blob)
    marks: list[tuple[float, int]] = []
    started = time.perf_counter()
    options = BuildOptions(
        dataset=str(folder),
        progress=False,
        imagenet_captions=False,
        force=True,
        batch_size=4 * BATCH,
        workers=min(16, os.cpu_count() or 1),
        chunk_size=8192,
    )
    StoreBuilder(encoder, options).build(
        root / "gpu-store", on_progress=lambda done, total: marks.append((time.perf_counter(), done))
    )
    whole = time.perf_counter() - started
    # Steady state: from the first batch embedded to the last, which leaves out loading the dataset's index.
    (first_time, first_done), (last_time, last_done) = marks[0], marks[-1]
    steady = (last_done - first_done) / (last_time - first_time) if last_done > first_done else 0.0
    return len(blobs) / whole, steady


def _attempt(ctx: Context, stage: str, func, *args):
    """Run one stage; a failure becomes a note, so one broken stage cannot cost the others' device time."""
    try:
        return func(*args)
    except Exception as error:
        log.exception("gpu stage %s failed", stage)
        ctx.notes.append(f"gpu: {stage} failed: {type(error).__name__}: {str(error)[:300]}")
        return None


def run(ctx: Context, out: Path, count: int) -> None:
    """Every GPU stage that this machine can run, each as a row; the rest as notes saying why not."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    if not on_gpu:
        count = min(count, 256)
        ctx.notes.append("gpu: no CUDA device here; ran the GPU benchmark's logic on the CPU at a small size")
    started = time.perf_counter()
    blobs = jpeg_corpus(count)  # forks its workers before anything creates a CUDA context
    sizes = np.asarray([len(blob) for blob in blobs])
    ctx.notes.append(
        f"gpu: made {count} JPEGs (mean {sizes.mean() / 1024:.0f} KiB) "
        f"in {time.perf_counter() - started:.0f} s"
    )
    if on_gpu:
        ctx.notes.append(f"gpu: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    model_dir = bench_model(out)

    tutorial = _attempt(
        ctx, "tutorial loop", tutorial_rate, model_dir, blobs[: TUTORIAL_SAMPLE if on_gpu else 16], device
    )
    encoder = ClipEncoder.load(str(model_dir), device=str(device))
    dtype = encoder.info.dtype

    def row(measure: str, value: float | None, **extra) -> None:
        if value is not None:
            ctx.add(Row("gpu", measure, tutorial, value, "img/s", higher_is_better=True, **extra))

    row(f"tutorial loop sample ({TUTORIAL_SAMPLE if on_gpu else 16} pictures, fp32, one at a time)", tutorial)
    row(
        f"batched encoding alone ({dtype}, batch {BATCH})",
        _attempt(ctx, "encoding", encode_only_rate, encoder, 40 if on_gpu else 2),
    )
    row(
        f"CPU decode in {os.cpu_count()} processes + {dtype} encoding",
        _attempt(
            ctx, "CPU decoding", cpu_decode_rate, encoder, blobs[: min(len(blobs), 8192 if on_gpu else 64)]
        ),
    )
    if not encoder.decodes_jpeg:
        ctx.notes.append("gpu: JPEG decoding on the device skipped (needs CUDA and torchvision)")
    else:
        row(
            "nvJPEG decode + GPU preprocessing alone",
            _attempt(ctx, "GPU decoding", device_decode_rate, encoder, blobs),
        )
        row(
            "nvJPEG decode alone (torchvision.io.decode_jpeg, batches of 256)",
            _attempt(ctx, "decode only", decode_only_rate, encoder, blobs),
        )
        row(
            f"JPEG bytes to embeddings, GPU decode, {count} pictures (ClipEncoder.encode_jpegs)",
            _attempt(ctx, "end to end", end_to_end_rate, encoder, blobs),
            limit=TARGET_IMAGES_PER_S if on_gpu else None,
        )
        cosine = _attempt(ctx, "agreement", agreement, encoder, blobs[:64])
        if cosine is not None:
            ctx.notes.append(
                f"gpu: least cosine, GPU-decoded against PIL-decoded embeddings of 64 files: {cosine:.5f}"
            )
    try:
        import datasets  # noqa: F401
    except Exception as error:  # the device image may lack datasets; carried wheels may not fit its pyarrow
        ctx.notes.append(f"gpu: StoreBuilder run skipped (datasets does not import: {error})")
        return
    rates = _attempt(ctx, "StoreBuilder", builder_rate, encoder, blobs, out)
    if rates is not None:
        row(f"StoreBuilder end to end ({count} JPEG files via datasets, thumbnails, chunks)", rates[0])
        row("StoreBuilder steady state (first batch embedded to last)", rates[1])
