"""Building a store on the CPU: StoreBuilder (batched, worker processes) vs the tutorial's picture loop."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bot.build import BuildOptions, StoreBuilder
from bot.encoder import ClipEncoder, pooled

from .baseline import TutorialClip
from .common import Context, Row, image_folder

log = logging.getLogger(__name__)


def tutorial_loop(clip: TutorialClip, files: list[Path]) -> float:
    """Pictures per second of: open, CLIPProcessor, get_image_features, one picture at a time."""
    started = time.perf_counter()
    vectors = []
    for file in files:
        picture = Image.open(file).convert("RGB")
        inputs = clip.processor(images=picture, return_tensors="pt")
        with torch.no_grad():
            vector = pooled(clip.model.get_image_features(**inputs))[0].numpy()
        vectors.append(vector / np.linalg.norm(vector))
    return len(files) / (time.perf_counter() - started)


def builder_rate(encoder: ClipEncoder, folder: Path, out: Path, count: int, **options) -> tuple[float, float]:
    """Pictures per second of a whole StoreBuilder run, and of its embedding phase alone."""
    marks: list[float] = []
    started = time.perf_counter()
    StoreBuilder(
        encoder,
        BuildOptions(dataset=str(folder), progress=False, imagenet_captions=False, force=True, **options),
    ).build(out, on_progress=lambda done, total: marks.append(time.perf_counter()))
    total = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    embedding = (marks[-1] - started) if marks else total
    return count / total, count / embedding


def run(ctx: Context, model_dir: Path, count: int, sample: int) -> None:
    """The tutorial loop on a sample, then StoreBuilder on the whole folder with clipbot's encoder."""
    folder = image_folder(ctx.out / f"pictures-{count}", count)
    files = sorted(folder.rglob("*.jpg"))
    clip = TutorialClip(model_dir)
    tutorial_loop(clip, files[:3])  # warm-up
    tutorial = tutorial_loop(clip, files[:sample])
    del clip
    encoder = ClipEncoder.load(str(model_dir), device="cpu")
    whole, embedding = builder_rate(encoder, folder, ctx.out / "build-bench-store", count)
    ctx.add(
        Row(
            "build",
            f"CPU build, {count} JPEGs 320-500 px, whole StoreBuilder run",
            tutorial,
            whole,
            "img/s",
            higher_is_better=True,
            target=2.0,
            note=f"{encoder.info.dtype}, batch 64, worker processes; tutorial loop timed on {sample}",
        )
    )
    ctx.add(
        Row("build", "CPU build, embedding phase only", tutorial, embedding, "img/s", higher_is_better=True)
    )
