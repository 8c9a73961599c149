"""One user at a time: /find and /similar service time (encode, search, render), and what each lever buys."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from bot.batching import BatchingEncoder
from bot.discord.replies import find_reply, similar_reply
from bot.encoder import ClipEncoder
from bot.images import open_image
from bot.preprocess import to_pixels
from bot.search import SearchService
from bot.store import EmbeddingStore

from .baseline import TutorialClip, TutorialService
from .common import (
    REAL_STORE_SIZE,
    ROOT,
    Context,
    Row,
    jpeg_bytes,
    percentile,
    photo_like,
    prompts,
    synthetic_store,
    timed_ms,
)

log = logging.getLogger(__name__)

# /find and /similar send 4 pictures unless asked for more (bot.discord.commands.DEFAULT_COUNT).
K = 4
# Discord passes uploads through untouched; 1600x1200 is a web-sized photo (phones send 4032x3024).
UPLOAD_SIZE = (1600, 1200)
WARMUP = 3


@dataclass
class Serving:
    """The two ways of answering, over the same store: the tutorial way and clipbot's."""

    store: EmbeddingStore
    tutorial: TutorialService
    encoder: ClipEncoder
    service: SearchService
    batching: BatchingEncoder

    def baseline_find(self, prompt: str) -> None:
        find_reply(self.tutorial.find(prompt, K), self.store.thumbnail)

    def ours_find(self, prompt: str) -> None:
        find_reply(self.service.find(prompt, K), self.store.thumbnail)

    def baseline_similar(self, data: bytes) -> None:
        similar_reply(self.tutorial.similar_bytes(data, K), self.store.thumbnail)

    def ours_similar(self, data: bytes) -> None:
        # The work of the bot's /similar (QueryVectors.picture, then SearchCog._similar_to_vector), in one thread.
        picture = open_image(data, draft_size=self.encoder.pixel_spec.resize)
        similar_reply(self.service.similar(picture, K), self.store.thumbnail)

    def close(self) -> None:
        self.batching.close()


def open_serving(ctx: Context, model_dir) -> Serving:
    """Load the store, the tutorial model and clipbot's encoder (precision auto) behind its batching front."""
    store = EmbeddingStore.load(synthetic_store(ctx.out, REAL_STORE_SIZE, model_dir), verify="quick")
    tutorial = TutorialService(TutorialClip(model_dir), store)
    encoder = ClipEncoder.load(str(model_dir), device="cpu")
    batching = BatchingEncoder(encoder)
    return Serving(store, tutorial, encoder, SearchService(batching, store), batching)


def uploads(count: int, size: tuple[int, int] = UPLOAD_SIZE) -> list[bytes]:
    """Photo-like JPEG uploads of `size`."""
    return [jpeg_bytes(photo_like(*size, seed=500 + i), 90) for i in range(count)]


def paired(baseline: Callable, ours: Callable, inputs: Sequence, warmup: int = WARMUP) -> tuple[list, list]:
    """Milliseconds per input for both, alternating which goes first, so machine noise falls on both alike."""
    for item in inputs[:warmup]:
        baseline(item)
        ours(item)
    base, mine = [], []
    for index, item in enumerate(inputs[warmup:]):
        if index % 2:
            mine.append(timed_ms(ours, item))
            base.append(timed_ms(baseline, item))
        else:
            base.append(timed_ms(baseline, item))
            mine.append(timed_ms(ours, item))
    return base, mine


def run(ctx: Context, model_dir, queries: int) -> Serving:
    """Measure /find and /similar one at a time, the cache, and each lever on its own."""
    serving = open_serving(ctx, model_dir)
    info = serving.encoder.info
    ctx.notes.append(f"clipbot's encoder on this machine: {info.device}, {info.dtype} (precision auto)")
    texts = prompts(queries + WARMUP, seed=1)
    base, mine = paired(serving.baseline_find, serving.ours_find, texts)
    for q in (50, 99):
        ctx.add(
            Row(
                "serving",
                f"/find p{q} (encode+search+render, 13k store)",
                percentile(base, q),
                percentile(mine, q),
                "ms",
                target=2.0 if q == 50 else None,
            )
        )

    data = uploads(8)
    similar_inputs = [data[i % len(data)] for i in range(queries // 2 + WARMUP)]
    base, mine = paired(serving.baseline_similar, serving.ours_similar, similar_inputs)
    for q in (50, 99):
        ctx.add(
            Row(
                "serving",
                f"/similar p{q} ({UPLOAD_SIZE[0]}x{UPLOAD_SIZE[1]} JPEG upload)",
                percentile(base, q),
                percentile(mine, q),
                "ms",
                target=2.0 if q == 50 else None,
            )
        )

    _cache_rows(ctx, serving, texts)
    _lever_rows(ctx, serving, model_dir, texts, data)
    return serving


def _cache_rows(ctx: Context, serving: Serving, texts: list[str]) -> None:
    repeat = texts[0]
    serving.ours_find(repeat)  # cached from here on
    hits = [timed_ms(lambda: serving.ours_find(repeat)) for _ in range(30)]
    base = [timed_ms(lambda: serving.baseline_find(repeat)) for _ in range(5)]
    ctx.add(
        Row(
            "cache",
            "/find repeated prompt p50 (vector cache hit)",
            percentile(base, 50),
            percentile(hits, 50),
            "ms",
        )
    )
    vector = serving.service.text_query_vector(repeat)
    pages = [
        timed_ms(
            lambda page=page: find_reply(
                serving.service.find_by_vector(vector, K, query=repeat, offset=K * page),
                serving.store.thumbnail,
            )
        )
        for page in range(1, 31)
    ]
    ctx.add(
        Row(
            "cache", '"More" next page p50 (cached vector)', percentile(base, 50), percentile(pages, 50), "ms"
        )
    )


def _wait_policy_rows(ctx: Context, model_dir, dtype: str) -> None:
    """OpenMP's default spinning against the passive policy clipbot sets, each in a fresh process."""
    results = {}
    for policy in ("", "PASSIVE"):  # an empty value makes libgomp keep its default (it warns and ignores it)
        env = {
            **os.environ,
            "OMP_WAIT_POLICY": policy,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
        }
        done = subprocess.run(
            [sys.executable, "-m", "bench.threads_child", str(model_dir), dtype],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        results[policy] = json.loads(done.stdout.strip().splitlines()[-1])
    load = os.getloadavg()[0]
    for kind in ("text", "image"):
        ctx.add(
            Row(
                "levers",
                f"{kind} encode ({dtype}), OpenMP threads spinning (libgomp default) vs passive",
                results[""][f"{kind}_ms"],
                results["PASSIVE"][f"{kind}_ms"],
                "ms",
                note=f"machine load average {load:.1f}",
            )
        )


def _lever_rows(ctx: Context, serving: Serving, model_dir, texts: list[str], data: list[bytes]) -> None:
    """Each lever against the tutorial way, on its own: padding, precision, the image path."""
    tutorial = serving.tutorial.clip
    fp32 = ClipEncoder.load(str(model_dir), device="cpu", precision="fp32")
    sample = texts[:20]
    pad77, longest32, chosen = [], [], []
    for text in sample:
        pad77.append(timed_ms(tutorial.text_vector, text))
        longest32.append(timed_ms(fp32.encode_texts, [text]))
        chosen.append(timed_ms(serving.encoder.encode_texts, [text]))
    dtype = serving.encoder.info.dtype
    ctx.add(
        Row(
            "levers",
            "text encode, padded to longest instead of 77 (fp32)",
            percentile(pad77, 50),
            percentile(longest32, 50),
            "ms",
        )
    )
    ctx.add(
        Row(
            "levers",
            f"text encode, padded to longest, {dtype}",
            percentile(pad77, 50),
            percentile(chosen, 50),
            "ms",
        )
    )

    spec = serving.encoder.pixel_spec
    slow_path, fast_path = [], []
    for blob in data * 2:
        slow_path.append(
            timed_ms(
                lambda blob=blob: tutorial.processor(
                    images=Image.open(io.BytesIO(blob)).convert("RGB"), return_tensors="pt"
                )
            )
        )
        fast_path.append(
            timed_ms(lambda blob=blob: to_pixels(open_image(blob, draft_size=spec.resize), spec))
        )
    ctx.add(
        Row(
            "levers",
            "upload decode+preprocess (JPEG draft + numpy vs full decode + CLIPProcessor)",
            percentile(slow_path, 50),
            percentile(fast_path, 50),
            "ms",
        )
    )
    small = jpeg_bytes(photo_like(500, 375, seed=3), 90)
    slow_small = [
        timed_ms(
            lambda: tutorial.processor(
                images=Image.open(io.BytesIO(small)).convert("RGB"), return_tensors="pt"
            )
        )
        for _ in range(20)
    ]
    fast_small = [
        timed_ms(lambda: to_pixels(open_image(small, draft_size=spec.resize), spec)) for _ in range(20)
    ]
    ctx.add(
        Row(
            "levers",
            "500x375 JPEG decode+preprocess (draft cannot skip: too small)",
            percentile(slow_small, 50),
            percentile(fast_small, 50),
            "ms",
        )
    )

    pixels = to_pixels(open_image(data[0], draft_size=spec.resize), spec)[None]
    tensor = torch.from_numpy(pixels)
    base, full, mine = [], [], []
    for _ in range(10):
        with torch.no_grad():
            base.append(timed_ms(tutorial.model.get_image_features, tensor))
        full.append(timed_ms(fp32.encode_pixels, pixels))
        mine.append(timed_ms(serving.encoder.encode_pixels, pixels))
    ctx.add(
        Row(
            "levers",
            "image encode fp32 (clipbot's encoder, fp32)",
            percentile(base, 50),
            percentile(full, 50),
            "ms",
        )
    )
    ctx.add(Row("levers", f"image encode, {dtype}", percentile(base, 50), percentile(mine, 50), "ms"))
    vectors_fp32 = fp32.encode_pixels(pixels)
    vectors_chosen = serving.encoder.encode_pixels(pixels)
    text_cos = float(np.min(np.sum(fp32.encode_texts(sample) * serving.encoder.encode_texts(sample), axis=1)))
    image_cos = float(np.sum(vectors_fp32 * vectors_chosen))
    ctx.notes.append(
        f"{dtype} against fp32 on the bench model: min text cosine {text_cos:.5f} over "
        f"{len(sample)} prompts, image cosine {image_cos:.5f}"
    )
    _wait_policy_rows(ctx, model_dir, "bf16" if dtype == "bfloat16" else "fp32")
