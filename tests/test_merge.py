"""Merging shards from `clipbot build --shard i/n`: the same store as an unsharded build, or a clear refusal."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bot.errors import StoreError
from bot.merge import merge_stores
from bot.store import DATA_FILES, Caption, EmbeddingStore, Manifest, StoreWriter

DIM = 16
LABELS = ["cat", "dog", "fish"]
CAPTIONS = [Caption(text=name, kind="class") for name in LABELS] + [Caption(text="a tench", kind="imagenet")]


@dataclasses.dataclass
class Rows:
    """Everything a store holds per picture, for one whole build."""

    vectors: np.ndarray
    ids: list[str]
    labels: np.ndarray
    rows: np.ndarray
    thumbs: list[bytes]
    captions: np.ndarray

    def part(self, start: int, stop: int) -> Rows:
        return Rows(self.vectors[start:stop], self.ids[start:stop], self.labels[start:stop], self.rows[start:stop],
                    self.thumbs[start:stop], self.captions)


def make_rows(count: int = 50, seed: int = 0) -> Rows:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    captions = rng.standard_normal((len(CAPTIONS), DIM)).astype(np.float32)
    thumbs = [rng.bytes(int(length)) for length in rng.integers(1, 40, count)]
    thumbs[3] = b""  # an empty thumbnail must not shift its neighbours' offsets
    return Rows(
        vectors=vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        ids=[f"train-{i}" if i < count - 10 else f"validation-{i - count + 10}" for i in range(count)],
        labels=rng.integers(0, len(LABELS), count).astype(np.int32),
        rows=np.asarray([i if i < count - 10 else i - count + 10 for i in range(count)], dtype=np.int64),
        thumbs=thumbs,
        captions=captions / np.linalg.norm(captions, axis=1, keepdims=True),
    )


def write(path: Path, rows: Rows, *, shard: tuple[int, int] | None = None, fingerprint: str = "fp-1",
          labels: list[str] = LABELS, captions: list[Caption] = CAPTIONS) -> Path:
    """A store laid out the way `StoreBuilder` writes one, whole or as shard i/n."""
    manifest = Manifest(
        model_id="test/model", model_fingerprint=fingerprint, dim=DIM,
        dataset={"id": "/data/pictures", "config": None, "splits": ["train", "validation"], "limit": None,
                 "shard": list(shard) if shard else None, "rows": len(rows.ids)},
        image_count=0, caption_count=0, label_names=list(labels), splits=["train", "validation"],
    )
    return StoreWriter(path).write(manifest, rows.vectors, rows.captions, rows.ids, rows.labels, rows.rows,
                                   captions, rows.thumbs)


def write_shards(root: Path, rows: Rows, count: int) -> list[Path]:
    """Shards cut exactly as `clipbot build --shard i/n` cuts the row list."""
    total = len(rows.ids)
    return [
        write(root / f"part-{i}", rows.part(total * i // count, total * (i + 1) // count), shard=(i, count))
        for i in range(count)
    ]


def assert_same_content(merged: EmbeddingStore, whole: EmbeddingStore) -> None:
    """Same vectors, ids, labels, rows, captions, thumbnails and dataset description."""
    assert np.array_equal(merged.image_vectors, whole.image_vectors)
    assert np.array_equal(merged.caption_vectors, whole.caption_vectors)
    assert list(merged.ids) == list(whole.ids)
    assert np.array_equal(merged.labels, whole.labels)
    assert np.array_equal(merged.rows, whole.rows)
    assert merged.captions == whole.captions
    assert [merged.thumbnail(i) for i in range(len(merged))] == [whole.thumbnail(i) for i in range(len(whole))]
    assert merged.manifest.dataset == whole.manifest.dataset
    assert merged.manifest.label_names == whole.manifest.label_names


@pytest.mark.parametrize("count", [1, 3, 7])
def test_merged_shards_equal_the_unsharded_store_file_for_file(tmp_path, count):
    rows = make_rows()
    whole = EmbeddingStore.load(write(tmp_path / "whole", rows))
    parts = write_shards(tmp_path, rows, count)
    report = merge_stores(list(reversed(parts)), tmp_path / "merged")  # any order: merged by shard index
    merged = EmbeddingStore.load(report.path)
    assert (report.shards, report.images, report.captions) == (count, 50, len(CAPTIONS))
    assert_same_content(merged, whole)
    assert merged.manifest.dataset["shard"] is None and merged.manifest.dataset["rows"] == 50
    # Every data file, thumbnails and their offsets included, is byte-for-byte the unsharded build's.
    assert {name: merged.manifest.files[name] for name in DATA_FILES} == whole.manifest.files


def test_merge_refuses_a_missing_shard(tmp_path):
    parts = write_shards(tmp_path, make_rows(), 4)
    with pytest.raises(StoreError, match=r"Shard 2/4 is missing"):
        merge_stores([parts[0], parts[1], parts[3]], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_merge_refuses_a_shard_given_twice(tmp_path):
    parts = write_shards(tmp_path, make_rows(), 2)
    with pytest.raises(StoreError, match=r"Shard 1/2 is given twice"):
        merge_stores([parts[0], parts[1], parts[1]], tmp_path / "merged")


def test_merge_refuses_shards_of_different_splits(tmp_path):
    rows = make_rows()
    parts = write_shards(tmp_path / "two", rows, 2) + write_shards(tmp_path / "three", rows, 3)
    with pytest.raises(StoreError, match="different numbers of parts"):
        merge_stores([parts[0], parts[3]], tmp_path / "merged")


def test_merge_refuses_a_whole_store(tmp_path):
    rows = make_rows()
    whole = write(tmp_path / "whole", rows)
    with pytest.raises(StoreError, match="not a shard"):
        merge_stores([whole, *write_shards(tmp_path, rows, 2)], tmp_path / "merged")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fingerprint": "fp-2"}, "model fingerprint"),
        ({"labels": ["cat", "dog", "eel"]}, "label names"),
        ({"captions": [*CAPTIONS[:3], Caption(text="a goldfish", kind="imagenet")]}, "captions"),
    ],
)
def test_merge_refuses_shards_of_another_build(tmp_path, change, message):
    rows = make_rows()
    first = write(tmp_path / "a", rows.part(0, 25), shard=(0, 2))
    second = write(tmp_path / "b", rows.part(25, 50), shard=(1, 2), **change)
    with pytest.raises(StoreError, match=message):
        merge_stores([first, second], tmp_path / "merged")


def test_merge_refuses_other_caption_vectors(tmp_path):
    rows = make_rows()
    first = write(tmp_path / "a", rows.part(0, 25), shard=(0, 2))
    other = dataclasses.replace(rows.part(25, 50), captions=make_rows(seed=1).captions)
    second = write(tmp_path / "b", other, shard=(1, 2))
    with pytest.raises(StoreError, match="different caption vectors"):
        merge_stores([first, second], tmp_path / "merged")


def test_merge_refuses_overlapping_shards(tmp_path):
    rows = make_rows()
    first = write(tmp_path / "a", rows.part(0, 30), shard=(0, 2))
    second = write(tmp_path / "b", rows.part(20, 50), shard=(1, 2))
    with pytest.raises(StoreError, match="train-20 is in both"):
        merge_stores([first, second], tmp_path / "merged")


def test_merge_will_not_overwrite_without_replace(tmp_path):
    parts = write_shards(tmp_path, make_rows(), 2)
    merge_stores(parts, tmp_path / "merged")
    with pytest.raises(StoreError, match="already exists"):
        merge_stores(parts, tmp_path / "merged")
    assert merge_stores(parts, tmp_path / "merged", replace=True).images == 50
    with pytest.raises(StoreError, match="one of the shards"):
        merge_stores(parts, parts[0])


@pytest.mark.slow
def test_a_real_sharded_build_merges_into_the_unsharded_build(tmp_path, tiny_clip_dir):
    pytest.importorskip("torch")
    from bot.build import BuildOptions, StoreBuilder
    from bot.encoder import ClipEncoder
    from tests.fixtures import make_image_folder

    folder = make_image_folder(tmp_path / "pictures", per_class=2, classes=("red_circle", "blue_square", "green_cross"))
    encoder = ClipEncoder.load(str(tiny_clip_dir), device="cpu", precision="fp32")

    def build(out: str, shard: tuple[int, int] | None) -> Path:
        options = BuildOptions(dataset=str(folder), shard=shard, batch_size=4, workers=0, chunk_size=3,
                               progress=False, imagenet_captions=False)
        return StoreBuilder(encoder, options).build(tmp_path / out)

    whole = EmbeddingStore.load(build("whole", None))
    parts = [build(f"part-{i}", (i, 3)) for i in range(3)]
    merged = EmbeddingStore.load(merge_stores(parts, tmp_path / "merged").path)
    assert len(merged) == len(whole) == 6
    assert list(merged.ids) == list(whole.ids)
    assert np.array_equal(merged.labels, whole.labels) and np.array_equal(merged.rows, whole.rows)
    assert [merged.thumbnail(i) for i in range(6)] == [whole.thumbnail(i) for i in range(6)]
    assert merged.manifest.dataset == whole.manifest.dataset
    same = {name for name in DATA_FILES if merged.manifest.files[name] == whole.manifest.files[name]}
    assert same >= set(DATA_FILES) - {"images.npy"}  # ids, labels, rows, captions, thumbnails: byte-identical
    # Batches differ between the sharded and unsharded runs, and CPU kernels may round a batch differently.
    assert np.allclose(merged.image_vectors, whole.image_vectors, atol=1e-5)
    assert np.allclose(merged.caption_vectors, whole.caption_vectors, atol=1e-5)
