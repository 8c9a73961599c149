"""The builder on image folders made by the suite: content, captions, resume, shards and refusals."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.build import BuildOptions, StoreBuilder
from bot.encoder import ClipEncoder
from bot.errors import BuildError
from bot.prompts import imagenet_classnames
from bot.store import EmbeddingStore
from tests.fixtures.shapes import make_image_folder

CLASSES = ("red_circle", "blue_square", "green_triangle")


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder.load(str(tiny_clip_dir), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("pictures"), per_class=5, seed=11, classes=CLASSES)


def options(folder: Path, **changes) -> BuildOptions:
    values = {"dataset": str(folder), "progress": False, "workers": 0, "imagenet_captions": False}
    values.update(changes)
    return BuildOptions(**values)


def test_folder_build_has_every_picture_label_and_thumbnail(tmp_path, encoder, folder) -> None:
    path = StoreBuilder(encoder, options(folder)).build(tmp_path / "store")
    store = EmbeddingStore.load(path, expect_fingerprint=encoder.info.fingerprint)
    assert len(store) == 15
    assert sorted(store.label_names) == sorted(CLASSES)
    assert sorted({store.item(i).label for i in range(15)}) == sorted(CLASSES)
    with Image.open(io.BytesIO(store.thumbnail(0))) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= 512
    assert [c.text for c in store.captions] == sorted(c.replace("_", " ") for c in CLASSES)
    manifest = store.manifest
    assert manifest.model_id == str(encoder.model_id) and manifest.dataset["splits"] == ["train"]
    assert not list(tmp_path.glob("*.partial"))


def test_stored_vectors_are_the_encoders_vectors(tmp_path, encoder, folder) -> None:
    store = EmbeddingStore.load(StoreBuilder(encoder, options(folder)).build(tmp_path / "store"))
    for index in (0, 7, 14):
        item = store.item(index)
        label = item.label
        files = sorted((folder / label).iterdir(), key=lambda p: p.name)
        # ids are split-row; the row order inside a class folder follows the file names
        vectors = encoder.encode_images([Image.open(f).convert("RGB") for f in files])
        assert np.max(vectors @ store.image_vectors[index]) > 0.9999


def test_imagenet_captions_are_added_by_default(tmp_path, encoder, folder) -> None:
    path = StoreBuilder(encoder, options(folder, imagenet_captions=True, limit=3)).build(tmp_path / "store")
    store = EmbeddingStore.load(path)
    kinds = [c.kind for c in store.captions]
    assert kinds.count("class") == 3 and kinds.count("imagenet") == len(imagenet_classnames())


def test_captions_file_replaces_imagenet(tmp_path, encoder, folder) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text("a sunset over the sea\n\n a cat on a sofa \nred circle\n")
    path = StoreBuilder(encoder, options(folder, captions_file=str(captions), imagenet_captions=True,
                                         limit=2)).build(tmp_path / "store")
    texts = [(c.text, c.kind) for c in EmbeddingStore.load(path).captions]
    assert ("a sunset over the sea", "file") in texts and ("a cat on a sofa", "file") in texts
    assert [t for t, _ in texts].count("red circle") == 1
    assert not any(kind == "imagenet" for _, kind in texts)


def test_limit_takes_the_first_rows(tmp_path, encoder, folder) -> None:
    store = EmbeddingStore.load(StoreBuilder(encoder, options(folder, limit=4)).build(tmp_path / "s"))
    assert [store.item(i).id for i in range(len(store))] == ["train-0", "train-1", "train-2", "train-3"]


def test_interrupted_build_resumes_where_it_stopped(tmp_path, encoder, folder) -> None:
    out = tmp_path / "store"
    seen: list[int] = []

    def stop_after_first_chunk(done: int, total: int) -> None:
        seen.append(done)
        if done > 8:  # inside the third chunk: the first two are on disk, the third is lost
            raise KeyboardInterrupt

    builder = StoreBuilder(encoder, options(folder, chunk_size=4, batch_size=4))
    with pytest.raises(KeyboardInterrupt):
        builder.build(out, on_progress=stop_after_first_chunk)
    assert not out.exists() and len(list((tmp_path / "store.partial").glob("chunk-*.npz"))) == 2
    with pytest.raises(Exception, match="unfinished build"):
        EmbeddingStore.load(out)

    resumed: list[int] = []
    builder.build(out, on_progress=lambda done, total: resumed.append(done))
    assert resumed[0] == 12  # chunks 0 and 1 (8 pictures) were not embedded again
    fresh = StoreBuilder(encoder, options(folder, chunk_size=4, batch_size=4)).build(tmp_path / "fresh")
    a, b = EmbeddingStore.load(out), EmbeddingStore.load(fresh)
    np.testing.assert_allclose(a.image_vectors, b.image_vectors, atol=1e-6)
    assert list(a.ids) == list(b.ids)
    assert [a.thumbnail(i) for i in range(len(a))] == [b.thumbnail(i) for i in range(len(b))]


def test_partial_build_with_other_options_is_refused(tmp_path, encoder, folder) -> None:
    out = tmp_path / "store"

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        StoreBuilder(encoder, options(folder, chunk_size=4)).build(out, on_progress=interrupt)
    with pytest.raises(BuildError, match="unfinished build with other settings"):
        StoreBuilder(encoder, options(folder, chunk_size=4, limit=5)).build(out)
    StoreBuilder(encoder, options(folder, chunk_size=4, limit=5, force=True)).build(out)
    assert len(EmbeddingStore.load(out)) == 5


def test_existing_output_needs_force(tmp_path, encoder, folder) -> None:
    out = StoreBuilder(encoder, options(folder, limit=2)).build(tmp_path / "store")
    with pytest.raises(BuildError, match="already exists; .*--force"):
        StoreBuilder(encoder, options(folder, limit=3)).build(out)
    StoreBuilder(encoder, options(folder, limit=3, force=True)).build(out)
    assert len(EmbeddingStore.load(out)) == 3


def test_undecodable_pictures_are_skipped(tmp_path, encoder) -> None:
    folder = make_image_folder(tmp_path / "pics", per_class=3, seed=2, classes=("red_circle",))
    (folder / "red_circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    store = EmbeddingStore.load(StoreBuilder(encoder, options(folder)).build(tmp_path / "store"))
    assert len(store) == 3


def test_shards_split_the_rows_without_overlap(tmp_path, encoder, folder) -> None:
    parts = [EmbeddingStore.load(StoreBuilder(encoder, options(folder, shard=(i, 3))).build(tmp_path / f"p{i}"))
             for i in range(3)]
    ids = [str(i) for part in parts for i in part.ids]
    assert ids == [f"train-{n}" for n in range(15)]
    assert [p.manifest.dataset["shard"] for p in parts] == [[0, 3], [1, 3], [2, 3]]


def test_missing_split_is_named(tmp_path, encoder, folder) -> None:
    with pytest.raises(BuildError, match="no split validation; it has train"):
        StoreBuilder(encoder, options(folder, splits=["validation"])).build(tmp_path / "s")


def test_missing_dataset_is_a_clear_error(tmp_path, encoder) -> None:
    with pytest.raises(BuildError, match="Cannot load the dataset"):
        StoreBuilder(encoder, options(tmp_path / "nowhere-to-be-found")).build(tmp_path / "s")


class DeviceDecoding:
    """The real encoder posing as one that decodes JPEGs on a GPU: `encode_jpegs` decodes with Pillow instead."""

    decodes_jpeg = True

    def __init__(self, encoder: ClipEncoder, *, fail: bool = False) -> None:
        self.encoder = encoder
        self.fail = fail
        self.jpegs_seen = 0
        self.pixel_spec, self.info = encoder.pixel_spec, encoder.info
        self.encode_pixels, self.encode_texts = encoder.encode_pixels, encoder.encode_texts

    def encode_jpegs(self, blobs):
        from bot.errors import EncoderError

        self.jpegs_seen += len(blobs)
        if self.fail:
            raise EncoderError("nvJPEG refused a file")
        return self.encoder.encode_images([Image.open(io.BytesIO(blob)).convert("RGB") for blob in blobs])


@pytest.mark.parametrize("fail", [False, True], ids=["device-decoding", "device-refuses-falls-back-to-cpu"])
def test_gpu_decoding_path_builds_the_same_store(tmp_path, encoder, fail: bool) -> None:
    folder = make_image_folder(tmp_path / "jpegs", per_class=4, seed=3, classes=CLASSES, formats=("jpg", "png"))
    cpu = EmbeddingStore.load(StoreBuilder(encoder, options(folder, batch_size=5)).build(tmp_path / "cpu"))
    device = DeviceDecoding(encoder, fail=fail)
    gpu = EmbeddingStore.load(StoreBuilder(device, options(folder, batch_size=5)).build(tmp_path / "gpu"))
    assert device.jpegs_seen == 6  # the JPEGs went to the device; the PNGs were prepared on the CPU
    assert list(gpu.ids) == list(cpu.ids) and list(gpu.labels) == list(cpu.labels)
    np.testing.assert_allclose(gpu.image_vectors, cpu.image_vectors, atol=1e-5)
    assert [gpu.thumbnail(i) for i in range(len(gpu))] == [cpu.thumbnail(i) for i in range(len(cpu))]
