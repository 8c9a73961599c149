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

from bot import encoder as encoder_module
from bot.build import BuildOptions, StoreBuilder, prepare_item
from bot.device_pixels import clip_pixels, decode_jpegs, pad_batch
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


def encode_only_rate(encoder: ClipEncoder, batches: int, batch: int = BATCH) -> float:
    """fp16 (or the CPU's precision) batched encoding of pixels already on the device."""
    spec = encoder.pixel_spec
    pixels = torch.randn(batch, 3, spec.crop, spec.crop, device=encoder.device)
    encoder.encode_pixels(pixels)
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_pixels(pixels)
    return batches * batch / (time.perf_counter() - started)


def _batched_rate(step, blobs: list[bytes], device: torch.device) -> float:
    """Pictures per second of `step` over `blobs` in batches of BATCH, after one warm-up batch, synchronised."""
    with torch.inference_mode():
        step(blobs[:BATCH])
        _sync(device)
        started = time.perf_counter()
        for start in range(0, len(blobs), BATCH):
            step(blobs[start : start + BATCH])
        _sync(device)
    return len(blobs) / (time.perf_counter() - started)


def device_decode_rate(encoder: ClipEncoder, blobs: list[bytes]) -> float:
    """nvJPEG decode and CLIP preprocessing on the GPU alone, one batch after another on one thread."""
    spec, device = encoder.pixel_spec, encoder.device
    return _batched_rate(lambda part: clip_pixels(decode_jpegs(part, device), spec, encoder.dtype), blobs, device)


def _pad_one_by_one(images: list[torch.Tensor]) -> torch.Tensor:
    """The padding as it was before nested tensors: one copy per picture (the breakdown's reference)."""
    height, width = max(int(i.shape[1]) for i in images), max(int(i.shape[2]) for i in images)
    padded = torch.zeros((len(images), 3, height, width), dtype=torch.uint8, device=images[0].device)
    for index, image in enumerate(images):
        padded[index, :, : image.shape[1], : image.shape[2]] = image
    return padded


def preprocessing_breakdown(encoder: ClipEncoder, blobs: list[bytes], batches: int = 20) -> str:
    """Milliseconds per batch of each preprocessing step, timed one step at a time (synchronised), and
    clip_pixels queued back to back: when that is as slow as the synchronised figure, the host is the limit."""
    spec, device = encoder.pixel_spec, encoder.device
    totals: dict[str, float] = {}

    def timed(name: str, func, *args):
        _sync(device)
        started = time.perf_counter()
        value = func(*args)
        _sync(device)
        totals[name] = totals.get(name, 0.0) + (time.perf_counter() - started) * 1e3
        return value

    with torch.inference_mode():
        decoded = []
        for index in range(batches + 1):
            if index == 1:
                totals.clear()  # the first batch warms up cuBLAS and the allocator
            images = timed("decode", decode_jpegs, blobs[index * BATCH : (index + 1) * BATCH], device)
            timed("pad (nested)", pad_batch, images)
            timed("pad (a copy per picture)", _pad_one_by_one, images)
            timed("clip_pixels", clip_pixels, images, spec, encoder.dtype)
            timed("encode", encoder.encode_pixels, clip_pixels(images, spec, encoder.dtype))
            decoded.append(images)
        _sync(device)
        started = time.perf_counter()
        for images in decoded[1:]:
            clip_pixels(images, spec, encoder.dtype)
        _sync(device)
        totals["clip_pixels queued"] = (time.perf_counter() - started) * 1e3
    return ", ".join(f"{name} {total / batches:.2f} ms" for name, total in totals.items())


def resampling_agreement(encoder: ClipEncoder, blobs: list[bytes]) -> str:
    """The same nvJPEG-decoded pictures preprocessed on the GPU and on the CPU: how many values differ."""
    with torch.inference_mode():
        images = decode_jpegs(blobs, encoder.device)
        gpu = clip_pixels(images, encoder.pixel_spec, torch.float32).cpu()
        cpu = clip_pixels([image.cpu() for image in images], encoder.pixel_spec, torch.float32)
    levels = (gpu - cpu).abs() * torch.tensor(encoder.pixel_spec.std).view(1, 3, 1, 1) * 255.0
    return (
        f"GPU against CPU preprocessing of the same {len(blobs)} decoded pictures: max {levels.max():.3f} "
        f"levels, {float((levels > 0.5).float().mean()):.2e} of the values one level apart"
    )


def end_to_end_rate(encoder: ClipEncoder, blobs: list[bytes], chunk: int = 2048, batch: int = BATCH) -> float:
    """JPEG bytes to normalised float32 vectors on the host, in chunks, through `encode_jpegs`."""
    encoder.encode_jpegs(blobs[:batch], batch_size=batch)
    started = time.perf_counter()
    for start in range(0, len(blobs), chunk):
        encoder.encode_jpegs(blobs[start : start + chunk], batch_size=batch)
    return len(blobs) / (time.perf_counter() - started)


def end_to_end_threads(encoder: ClipEncoder, blobs: list[bytes], threads: int) -> float:
    """`end_to_end_rate` with `threads` host threads preparing chunks."""
    default = encoder_module.DECODE_THREADS
    encoder_module.DECODE_THREADS = threads
    try:
        return end_to_end_rate(encoder, blobs)
    finally:
        encoder_module.DECODE_THREADS = default


def decode_only_rate(encoder: ClipEncoder, blobs: list[bytes]) -> float:
    """torchvision's batched nvJPEG decode alone, to split decoding from preprocessing."""
    return _batched_rate(lambda part: decode_jpegs(part, encoder.device), blobs, encoder.device)


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
        row(
            "the same, measured again (the spread between two runs)",
            _attempt(ctx, "end to end, again", end_to_end_rate, encoder, blobs),
        )
        row(
            "the same, batches of 512 in chunks of 8192",
            _attempt(ctx, "end to end, batch 512", end_to_end_rate, encoder, blobs, 8192, 2 * BATCH),
        )
        row(
            "the same, 8 host threads preparing chunks",
            _attempt(ctx, "end to end, 8 threads", end_to_end_threads, encoder, blobs, 8),
        )
        if on_gpu:
            row(
                f"batched encoding alone ({dtype}, batch 512)",
                _attempt(ctx, "encoding 512", encode_only_rate, encoder, 20, 512),
            )
        breakdown = _attempt(ctx, "breakdown", preprocessing_breakdown, encoder, blobs, 20 if on_gpu else 1)
        if breakdown:
            ctx.notes.append(f"gpu: per batch of {BATCH}: {breakdown}")
        cosine = _attempt(ctx, "agreement", agreement, encoder, blobs[:64])
        if cosine is not None:
            ctx.notes.append(
                f"gpu: least cosine, GPU-decoded against PIL-decoded embeddings of 64 files: {cosine:.5f}"
            )
        resampled = _attempt(ctx, "resampling agreement", resampling_agreement, encoder, blobs[:64])
        if resampled:
            ctx.notes.append(f"gpu: {resampled}")
    try:
        import datasets  # noqa: F401
    except Exception as error:  # the device image may lack datasets; carried wheels may not fit its pyarrow
        ctx.notes.append(f"gpu: StoreBuilder run skipped (datasets does not import: {error})")
        return
    rates = _attempt(ctx, "StoreBuilder", builder_rate, encoder, blobs, out)
    if rates is not None:
        row(f"StoreBuilder end to end ({count} JPEG files via datasets, thumbnails, chunks)", rates[0])
        row("StoreBuilder steady state (first batch embedded to last)", rates[1])
