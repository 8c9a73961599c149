"""Partial stores from `clipbot build --shard i/n` joined into the one store an unsharded build would make."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import StoreError
from .store import THUMBS, EmbeddingStore, Manifest, StoreWriter

log = logging.getLogger(__name__)

# Dataset fields every shard of one build shares; `shard` and `rows` are each shard's own.
SHARED_DATASET_KEYS = ("id", "config", "splits", "limit")
# Caption vectors are embedded again by every shard; identical on one machine, within float noise across
# machines (CPU against GPU kernels), never further apart than this per component.
CAPTION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class MergeReport:
    """What a merge wrote."""

    path: Path
    shards: int
    images: int
    captions: int
    seconds: float


def merge_stores(
    parts: Sequence[str | os.PathLike], out: str | os.PathLike, *, replace: bool = False, verify: str = "full"
) -> MergeReport:
    """Check that `parts` are shards 0..n-1 of one build and write them, in shard order, as one store. Blocking."""
    started = time.perf_counter()
    out = Path(out)
    if not parts:
        raise StoreError("Name the partial stores to merge, e.g. `clipbot merge --out DIR part-0 part-1`.")
    paths = [Path(part) for part in parts]
    if any(path.resolve() == out.resolve() for path in paths):
        raise StoreError(f"--out {out} is one of the shards; write the merged store somewhere else.")
    stores = [EmbeddingStore.load(path, verify=verify) for path in paths]
    ordered = _in_shard_order(stores)
    first = ordered[0]
    for store in ordered[1:]:
        _check_compatible(first, store)
    _check_unique_ids(ordered)
    manifest = _merged_manifest(first.manifest, ordered)
    writer = StoreWriter(out, replace=replace)
    path = writer.write(
        manifest,
        np.concatenate([np.asarray(s.image_vectors) for s in ordered]),
        np.asarray(first.caption_vectors),
        [str(value) for s in ordered for value in s.ids],
        np.concatenate([np.asarray(s.labels) for s in ordered]),
        np.concatenate([np.asarray(s.rows) for s in ordered]),
        first.captions,
        _thumbnails(ordered),
    )
    report = MergeReport(path=path, shards=len(ordered), images=sum(len(s) for s in ordered),
                         captions=len(first.captions), seconds=time.perf_counter() - started)
    log.info("merged %d shards into %s: %d images (%.1f s)", report.shards, path, report.images, report.seconds)
    return report


def _shard_of(store: EmbeddingStore) -> tuple[int, int]:
    shard = store.manifest.dataset.get("shard")
    if not shard:
        raise StoreError(
            f"{store.path} is a whole store, not a shard; merge only partial stores built with `clipbot build --shard i/n`."
        )
    index, count = (int(value) for value in shard)
    return index, count


def _in_shard_order(stores: Sequence[EmbeddingStore]) -> list[EmbeddingStore]:
    """The stores sorted by shard index, once they are exactly shards 0..n-1 of the same n."""
    shards = [_shard_of(store) for store in stores]
    counts = sorted({count for _, count in shards})
    if len(counts) > 1:
        listed = ", ".join(f"{s.path} ({i}/{n})" for s, (i, n) in zip(stores, shards))
        raise StoreError(f"These shards come from splits into different numbers of parts: {listed}.")
    count = counts[0]
    seen: dict[int, EmbeddingStore] = {}
    for store, (index, _) in zip(stores, shards):
        if index in seen:
            raise StoreError(f"Shard {index}/{count} is given twice: {seen[index].path} and {store.path}.")
        seen[index] = store
    missing = [f"{index}/{count}" for index in range(count) if index not in seen]
    if missing:
        raise StoreError(
            f"Shard {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing; build "
            f"{'it' if len(missing) == 1 else 'them'} with `clipbot build --shard` and pass every shard 0..{count - 1}."
        )
    return [seen[index] for index in range(count)]


def _check_compatible(first: EmbeddingStore, other: EmbeddingStore) -> None:
    """Refuse a shard that is not from the same build as the first, naming what differs."""
    a, b = first.manifest, other.manifest
    checks = (
        ("model fingerprint", a.model_fingerprint, b.model_fingerprint),
        ("vector dimension", a.dim, b.dim),
        ("store format", (a.format, a.version), (b.format, b.version)),
        *((f"dataset {key}", a.dataset.get(key), b.dataset.get(key)) for key in SHARED_DATASET_KEYS),
        ("label names", a.label_names, b.label_names),
        ("splits", a.splits, b.splits),
        ("captions", [(c.text, c.kind) for c in first.captions], [(c.text, c.kind) for c in other.captions]),
    )
    for what, mine, theirs in checks:
        if mine != theirs:
            raise StoreError(
                f"Shards {first.path} and {other.path} differ in {what} ({_short(mine)} vs {_short(theirs)}); "
                "merge only shards of one `clipbot build` run with the same model and options."
            )
    if not np.allclose(first.caption_vectors, other.caption_vectors, rtol=0, atol=CAPTION_TOLERANCE):
        raise StoreError(
            f"Shards {first.path} and {other.path} hold different caption vectors; "
            "they were not embedded by the same model, so rebuild the odd one out."
        )


def _check_unique_ids(stores: Sequence[EmbeddingStore]) -> None:
    seen: dict[str, Path] = {}
    for store in stores:
        for value in store.ids:
            item = str(value)
            if item in seen:
                raise StoreError(
                    f"Picture {item} is in both {seen[item]} and {store.path}: the shards overlap; "
                    "rebuild them from one dataset with the same --limit."
                )
            seen[item] = store.path


def _merged_manifest(template: Manifest, stores: Sequence[EmbeddingStore]) -> Manifest:
    dataset = dict(template.dataset)
    dataset["shard"] = None
    dataset["rows"] = sum(int(store.manifest.dataset.get("rows", len(store))) for store in stores)
    return Manifest(
        model_id=template.model_id,
        model_fingerprint=template.model_fingerprint,
        dim=template.dim,
        dataset=dataset,
        image_count=0,
        caption_count=0,
        label_names=list(template.label_names),
        splits=list(template.splits),
    )


def _thumbnails(stores: Sequence[EmbeddingStore]) -> Iterator[bytes]:
    """Every shard's thumbnails in item order; the writer lays them out afresh, so offsets start at zero again."""
    for store in stores:
        if len(store) == 0:
            continue
        blob = np.memmap(store.path / THUMBS, dtype=np.uint8, mode="r") if (store.path / THUMBS).stat().st_size else None
        for offset, length in np.asarray(store.thumb_index, dtype=np.int64):
            yield b"" if length == 0 or blob is None else blob[offset : offset + length].tobytes()


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
