"""Hand-made stores for tests: known vectors, labels and thumbnails, written with the real StoreWriter."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from bot.store import Caption, Manifest, StoreWriter


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Normalise each row to unit length."""
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def tiny_jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    """A small solid-colour JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_store(
    path: Path,
    image_vectors: np.ndarray,
    labels: Sequence[int],
    label_names: Sequence[str],
    caption_vectors: np.ndarray | None = None,
    caption_texts: Sequence[str] | None = None,
    *,
    fingerprint: str = "f" * 16,
    model_id: str = "test/model",
    replace: bool = False,
) -> Path:
    """Write a complete store with one thumbnail per image."""
    image_vectors = unit_rows(image_vectors)
    dim = image_vectors.shape[1]
    if caption_vectors is None:
        caption_vectors = np.zeros((0, dim), np.float32)
    caption_vectors = unit_rows(caption_vectors) if len(caption_vectors) else caption_vectors
    texts = list(caption_texts or [f"caption {i}" for i in range(len(caption_vectors))])
    manifest = Manifest(
        model_id=model_id,
        model_fingerprint=fingerprint,
        dim=dim,
        dataset={"id": "hand-made", "config": None, "splits": ["train"], "limit": None, "shard": None,
                 "rows": len(image_vectors)},
        image_count=0,
        caption_count=0,
        label_names=list(label_names),
        splits=["train"],
    )
    thumbs = [tiny_jpeg(((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)) for i in range(len(image_vectors))]
    return StoreWriter(path, replace=replace).write(
        manifest,
        image_vectors,
        caption_vectors,
        [f"train-{i}" for i in range(len(image_vectors))],
        np.asarray(labels, dtype=np.int32),
        np.arange(len(image_vectors), dtype=np.int64),
        [Caption(text=t) for t in texts],
        thumbs,
    )
