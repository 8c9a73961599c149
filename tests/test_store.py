"""The on-disk store: round trip, memory-mapping, and every way a bad store is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot.errors import ModelMismatchError, StoreError
from bot.store import IMAGE_VECTORS, MANIFEST, THUMBS, EmbeddingStore, StoreWriter
from tests.storekit import unit_rows, write_store

RNG = np.random.default_rng(7)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    vectors = RNG.normal(size=(12, 8))
    captions = RNG.normal(size=(3, 8))
    return write_store(tmp_path / "store", vectors, [i % 3 for i in range(12)], ["cat", "dog", "red_circle"],
                       captions, ["a cat", "a dog", "a red circle"])


def test_round_trip_keeps_vectors_metadata_and_thumbnails(store_dir: Path) -> None:
    store = EmbeddingStore.load(store_dir)
    assert len(store) == 12 and store.dim == 8
    assert isinstance(store.image_vectors, np.memmap)
    np.testing.assert_allclose(np.linalg.norm(store.image_vectors, axis=1), 1.0, atol=1e-6)
    item = store.item(4)
    assert (item.id, item.label, item.caption, item.split, item.row) == ("train-4", "dog", "dog", "train", 4)
    assert store.item(5).caption == "red circle"
    assert store.thumbnail(4)[:3] == b"\xff\xd8\xff"
    assert store.thumbnail(4) != store.thumbnail(5)
    assert [c.text for c in store.captions] == ["a cat", "a dog", "a red circle"]
    assert store.index_of("train-7") == 7
    assert store.label_code("Red Circle") == store.label_code("red_circle") == 2


def test_write_is_atomic_and_leaves_no_staging(tmp_path: Path, store_dir: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    with pytest.raises(StoreError, match="already exists"):
        StoreWriter(store_dir)


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"caption vectors have shape \(2, 5\), expected \(n, 4\)"):
        write_store(tmp_path / "broken", RNG.normal(size=(3, 4)), [0, 0, 0], ["x"],
                    caption_vectors=np.ones((2, 5)))
    assert list(tmp_path.iterdir()) == []


def test_replace_swaps_the_whole_store(store_dir: Path) -> None:
    write_store(store_dir, RNG.normal(size=(2, 8)), [0, 0], ["only"], replace=True)
    store = EmbeddingStore.load(store_dir)
    assert len(store) == 2 and store.label_names == ["only"]
    assert not [p for p in store_dir.parent.iterdir() if p.name.startswith(".")]


def test_missing_store_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist; build one with `clipbot build"):
        EmbeddingStore.load(tmp_path / "nowhere")


def test_half_written_store_is_refused(tmp_path: Path, store_dir: Path) -> None:
    (store_dir / MANIFEST).unlink()
    with pytest.raises(StoreError, match="incomplete"):
        EmbeddingStore.load(store_dir)
    (tmp_path / "fresh.partial").mkdir()
    with pytest.raises(StoreError, match="unfinished build"):
        EmbeddingStore.load(tmp_path / "fresh")


def test_truncated_file_is_refused(store_dir: Path) -> None:
    data = (store_dir / THUMBS).read_bytes()
    (store_dir / THUMBS).write_bytes(data[:-10])
    with pytest.raises(StoreError, match="thumbs.bin is .* bytes, the manifest says"):
        EmbeddingStore.load(store_dir)


def test_checksum_mismatch_is_refused(store_dir: Path) -> None:
    raw = bytearray((store_dir / IMAGE_VECTORS).read_bytes())
    raw[-4] ^= 0x01  # the lowest mantissa bit of the last float: still unit length, but not the same bytes
    (store_dir / IMAGE_VECTORS).write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="images.npy does not match its checksum"):
        EmbeddingStore.load(store_dir)
    EmbeddingStore.load(store_dir, verify="quick")  # quick skips checksums by design


def _rewrite_manifest(store_dir: Path, **changes) -> None:
    manifest = json.loads((store_dir / MANIFEST).read_text())
    manifest.update(changes)
    (store_dir / MANIFEST).write_text(json.dumps(manifest))


def test_unnormalised_rows_are_refused(tmp_path: Path) -> None:
    vectors = unit_rows(RNG.normal(size=(5, 4)))
    vectors[3] *= 2.0
    path = write_store(tmp_path / "s", vectors, [0] * 5, ["x"])
    # write_store normalises, so corrupt the file and its checksum entry the way a buggy writer would.
    array = np.load(path / IMAGE_VECTORS)
    array[3] *= 2.0
    np.save(path / IMAGE_VECTORS, array)
    from bot.store import sha256_file

    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"][IMAGE_VECTORS] = {"bytes": (path / IMAGE_VECTORS).stat().st_size,
                                        "sha256": sha256_file(path / IMAGE_VECTORS)}
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="row 3 of images.npy is not unit length"):
        EmbeddingStore.load(path)


def test_wrong_dimension_is_refused(store_dir: Path) -> None:
    with pytest.raises(ModelMismatchError, match="8-dimensional vectors but the model makes 16"):
        EmbeddingStore.load(store_dir, expect_dim=16)
    _rewrite_manifest(store_dir, dim=9)
    with pytest.raises(StoreError, match=r"images.npy has shape \(12, 8\), the manifest says \(12, 9\)"):
        EmbeddingStore.load(store_dir)


def test_count_mismatch_is_refused(store_dir: Path) -> None:
    _rewrite_manifest(store_dir, image_count=13)
    with pytest.raises(StoreError, match="the manifest says"):
        EmbeddingStore.load(store_dir)


def test_model_mismatch_is_refused(store_dir: Path) -> None:
    with pytest.raises(ModelMismatchError, match="built with another model .*test/model"):
        EmbeddingStore.load(store_dir, expect_fingerprint="0" * 16)


def test_future_format_version_is_refused(store_dir: Path) -> None:
    _rewrite_manifest(store_dir, version=99)
    with pytest.raises(StoreError, match="format version 99 is not supported"):
        EmbeddingStore.load(store_dir)


def test_corrupt_manifest_is_refused(store_dir: Path) -> None:
    (store_dir / MANIFEST).write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json is corrupt"):
        EmbeddingStore.load(store_dir)
