"""Shared pieces of the benchmarks: result rows, percentiles, the bench model, synthetic stores, pictures."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "out"
# CLIPConfig() defaults are ViT-B/32's architecture (512-d, 224 px, 12+12 layers); speed ignores weights.
BENCH_MODEL = "vit-b-32-random"
IMAGE_SIZE = 224
DIM = 512
# The imagenette store the bot ships with has 13,394 pictures (train 9,469 + validation 3,925).
REAL_STORE_SIZE = 13_394
# ImageNet's 1,000 classes plus imagenette's 10: the captions a default store answers /similar with.
CAPTION_COUNT = 1_010
SUBJECTS = (
    "dog",
    "cat",
    "church",
    "parachute",
    "golf ball",
    "garbage truck",
    "chainsaw",
    "french horn",
    "fish",
    "cassette player",
    "red car",
    "bicycle",
    "mountain",
    "beach",
    "bird",
    "horse",
    "child",
    "kitchen",
    "boat",
    "tree",
    "bridge",
    "guitar",
    "pizza",
    "clock",
)
SCENES = (
    "in the snow",
    "at night",
    "on a beach",
    "in a city street",
    "under a blue sky",
    "in the rain",
    "indoors",
    "in a field",
    "next to a river",
    "in black and white",
    "at sunset",
    "seen from above",
)
STYLES = (
    "a photo of",
    "a picture of",
    "a close-up of",
    "an old photo of",
    "a blurry photo of",
    "a drawing of",
)


@dataclass
class Row:
    """One line of the results table: a measure for the baseline and for clipbot, and their ratio."""

    part: str
    measure: str
    baseline: float | None
    ours: float
    unit: str
    higher_is_better: bool = False
    target: float | None = None  # the least ratio the issue asks for, if any
    limit: float | None = None  # an absolute bound on clipbot's figure (a floor if higher is better), if any
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How many times better clipbot is (>1 is better), whichever direction the unit runs."""
        if self.baseline is None or not self.ours or not self.baseline:
            return None
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours

    @property
    def holds(self) -> bool | None:
        """Whether the ratio meets the target and the figure its limit (None where neither is set)."""
        if self.limit is not None:
            return self.ours >= self.limit if self.higher_is_better else self.ours <= self.limit
        ratio = self.ratio
        if self.target is None or ratio is None:
            return None
        return ratio >= self.target

    def to_json(self) -> dict:
        """The row with its derived ratio, for the JSON results file."""
        return {**asdict(self), "ratio": self.ratio, "holds": self.holds}


@dataclass
class Context:
    """What every benchmark part needs: where to cache things, sizes, and the rows gathered so far."""

    out: Path
    quick: bool = False
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        """Record a row and show it at once, so a long run can be followed."""
        self.rows.append(row)
        log.info(
            "%s | %s: baseline %s, clipbot %s %s",
            row.part,
            row.measure,
            fmt(row.baseline),
            fmt(row.ours),
            row.unit,
        )


def fmt(value: float | None) -> str:
    """A number with sensible precision for the table."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else math.nan


def timed_ms(func: Callable[..., object], *args: object) -> float:
    """Milliseconds one call of `func(*args)` takes."""
    started = time.perf_counter()
    func(*args)
    return (time.perf_counter() - started) * 1e3


def machine() -> dict:
    """The machine the numbers come from: CPU model, cores, memory, load, software versions."""
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "gpu": gpu,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def memory_status() -> dict[str, float]:
    """Current RSS split into anonymous (copied) and file-backed (memory-mapped) memory, in MiB."""
    values = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return values


# --- the bench model --------------------------------------------------------------------------------------


def bench_model(out: Path) -> Path:
    """A random-weight ViT-B/32 CLIP with the real CLIP tokenizer, saved once under `out` and reused."""
    directory = out / BENCH_MODEL
    if (directory / "config.json").exists() and (directory / "tokenizer.json").exists():
        return directory
    import torch
    from transformers import CLIPConfig, CLIPModel

    from tests.fixtures.models import save_clip_checkpoint

    log.info("writing the random-weight ViT-B/32 bench model to %s", directory)
    scratch = directory.with_name(directory.name + ".tmp")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig()).eval()
    save_clip_checkpoint(model, scratch, image_size=IMAGE_SIZE)
    os.replace(scratch, directory)
    return directory


def model_identity(model_dir: Path) -> str:
    """The bench model's fingerprint, computed as the encoder computes it (and cached beside the model)."""
    cached = model_dir / "clipbot-fingerprint.txt"
    if cached.exists():
        return cached.read_text().strip()
    from transformers import CLIPModel

    from bot.encoder import model_fingerprint

    fingerprint = model_fingerprint(CLIPModel.from_pretrained(model_dir))
    cached.write_text(fingerprint)
    return fingerprint


# --- queries and pictures ---------------------------------------------------------------------------------


def prompts(count: int, seed: int = 0) -> list[str]:
    """`count` distinct short chat-style prompts (so that no query hits the vector cache)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        text = f"{rng.choice(STYLES)} a {rng.choice(SUBJECTS)} {rng.choice(SCENES)}"
        if text in seen:
            text = f"{text} number {len(seen)}"
        seen[text] = None
    return list(seen)


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """A picture with photo-like statistics (gradients, shapes, fine noise), so JPEG sizes are realistic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            127
            + 100 * np.sin(x / rng.uniform(40, 200) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(40, 200)),
            127 + 100 * np.cos((x + y) / rng.uniform(60, 300) + rng.uniform(0, 6)),
            127 + 100 * np.sin(y / rng.uniform(30, 150) + rng.uniform(0, 6)),
        ],
        axis=-1,
    )
    picture = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(12):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(0.05, 0.3) * min(width, height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x0 + size, y0 + size), fill=colour)
        else:
            draw.rectangle((x0, y0, x0 + size, y0 + size * rng.uniform(0.5, 1.5)), fill=colour)
    picture = picture.filter(ImageFilter.GaussianBlur(1.2))
    grain = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(picture, np.float32) + grain, 0, 255).astype(np.uint8))


def jpeg_bytes(picture: Image.Image, quality: int = 90) -> bytes:
    """The picture as JPEG bytes."""
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def image_folder(root: Path, count: int, *, classes: int = 10, seed: int = 0) -> Path:
    """An `imagefolder` of `count` photo-like JPEGs of 320-500 px in `classes` class folders, made once."""
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{count}:{classes}:{seed}":
        return root
    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = root / f"class_{index % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        long_side, short_side = int(rng.integers(400, 501)), int(rng.integers(320, 400))
        size = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
        (folder / f"{index:06d}.jpg").write_bytes(
            jpeg_bytes(photo_like(*size, seed=seed * 1_000_003 + index), 85)
        )
    marker.write_text(f"{count}:{classes}:{seed}")
    return root


# --- synthetic stores -------------------------------------------------------------------------------------


def unit_vectors(count: int, dim: int = DIM, seed: int = 0, chunk: int = 262_144) -> np.ndarray:
    """Random normalised float32 rows, made in chunks to keep the peak memory at the result's size."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        block = rng.standard_normal((min(chunk, count - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def _thumbnail_pool(count: int, side: int) -> list[bytes]:
    return [jpeg_bytes(photo_like(side, side * 3 // 4, seed=10_000 + i), 80) for i in range(count)]


def _cycled(pool: Sequence[bytes], count: int) -> Iterator[bytes]:
    for index in range(count):
        yield pool[index % len(pool)]


def synthetic_store(out: Path, count: int, model_dir: Path, *, thumb_side: int | None = None) -> Path:
    """A store of `count` random unit vectors for the bench model, written once with StoreWriter and reused.

    Thumbnails cycle through a pool of real JPEGs: 256 px ones for stores the size of the real one (what
    /find sends back), tiny ones for the big synthetic stores, which exist to measure loading and search.
    """
    from bot.store import Caption, Manifest, StoreWriter

    fingerprint = model_identity(model_dir)
    side = thumb_side or (256 if count <= 20_000 else 32)
    path = out / "stores" / f"synthetic-{count}-{side}px"
    stamp = path / "bench-stamp.json"
    identity = {"count": count, "fingerprint": fingerprint, "model": str(model_dir), "thumb_side": side}
    if stamp.exists() and json.loads(stamp.read_text()) == identity:
        return path
    started = time.perf_counter()
    label_names = [f"class {i}" for i in range(10)]
    manifest = Manifest(
        model_id=str(model_dir),
        model_fingerprint=fingerprint,
        dim=DIM,
        dataset={
            "id": "synthetic",
            "config": None,
            "splits": ["train"],
            "limit": None,
            "shard": None,
            "rows": count,
        },
        image_count=0,
        caption_count=0,
        label_names=label_names,
        splits=["train"],
    )
    vectors = unit_vectors(count, seed=count)
    captions = [Caption(text=f"caption {i}", kind="imagenet") for i in range(CAPTION_COUNT)]
    StoreWriter(path, replace=True).write(
        manifest,
        vectors,
        unit_vectors(CAPTION_COUNT, seed=1),
        [f"train-{i}" for i in range(count)],
        np.arange(count, dtype=np.int32) % len(label_names),
        np.arange(count, dtype=np.int64),
        captions,
        _cycled(_thumbnail_pool(64, side), count),
    )
    del vectors
    stamp.write_text(json.dumps(identity))
    log.info("wrote the synthetic %d-vector store %s in %.1f s", count, path, time.perf_counter() - started)
    return path
