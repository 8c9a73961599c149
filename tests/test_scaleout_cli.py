"""The scale-out verbs through a real `python -m bot` process: export-milvus, milvus-info, merge."""

from __future__ import annotations

import json
import subprocess

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from bot.milvus import MilvusIndex
from bot.search import SearchService
from bot.store import EmbeddingStore
from tests.clirun import clipbot
from tests.test_merge import make_rows, write_shards
from tests.test_milvus import write_store


def ok_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_export_then_milvus_info_describe_the_store_collections(tmp_path):
    store = write_store(tmp_path / "store", rows=120)
    exported = ok_json(clipbot("export-milvus", "--store", str(store.path), "--no-progress", "--json", cwd=tmp_path))
    assert (exported["images"], exported["captions"], exported["index"]) == (120, 12, "flat")
    assert exported["uri"] == str(store.path / "milvus.db")
    info = ok_json(clipbot("milvus-info", "--store", str(store.path), "--json", cwd=tmp_path))
    assert (info["images"], info["captions"], info["images_collection"]) == (120, 12, exported["images_collection"])
    assert info["lite"] is True
    # The Lite database inside the store directory leaves the store itself valid.
    assert ok_json(clipbot("info", "--store", str(store.path), "--json", cwd=tmp_path))["images"] == 120


def test_export_again_needs_drop_and_then_replaces_the_index(tmp_path):
    store = write_store(tmp_path / "store", rows=60)
    uri = str(tmp_path / "elsewhere" / "vectors.db")
    env = {"CLIPBOT_MILVUS_URI": uri, "CLIPBOT_STORE": str(store.path)}
    ok_json(clipbot("export-milvus", "--no-progress", "--json", cwd=tmp_path, **env))
    again = clipbot("export-milvus", "--no-progress", cwd=tmp_path, **env)
    assert again.returncode == 1 and "--drop" in again.stderr
    ok_json(clipbot("export-milvus", "--drop", "--index", "hnsw", "--no-progress", "--json", cwd=tmp_path, **env))
    assert ok_json(clipbot("milvus-info", "--json", cwd=tmp_path, **env))["index"] == "hnsw"
    assert not (store.path / "milvus.db").exists()  # CLIPBOT_MILVUS_URI was used, not the default


def test_milvus_info_before_export_says_what_to_run(tmp_path):
    store = write_store(tmp_path / "store", rows=10)
    result = clipbot("milvus-info", "--store", str(store.path), cwd=tmp_path)
    assert result.returncode == 1
    assert f"run `clipbot export-milvus --store {store.path}` first" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_lite_file_open_in_another_process_is_refused_until_closed(tmp_path):
    store = write_store(tmp_path / "store", rows=10)
    ok_json(clipbot("export-milvus", "--store", str(store.path), "--no-progress", "--json", cwd=tmp_path))
    index = MilvusIndex.connect(EmbeddingStore.load(store.path))
    try:
        held = clipbot("milvus-info", "--store", str(store.path), cwd=tmp_path)
        assert held.returncode == 1 and "another process may hold it" in held.stderr
    finally:
        index.close()
    ok_json(clipbot("milvus-info", "--store", str(store.path), "--json", cwd=tmp_path))


def test_merge_joins_shards_and_names_a_missing_one(tmp_path):
    parts = [str(path) for path in write_shards(tmp_path, make_rows(), 3)]
    merged = ok_json(clipbot("merge", "--out", str(tmp_path / "merged"), parts[2], parts[0], parts[1], "--json",
                             cwd=tmp_path))
    assert (merged["shards"], merged["images"]) == (3, 50)
    assert EmbeddingStore.load(tmp_path / "merged").manifest.dataset["shard"] is None
    refused = clipbot("merge", "--out", str(tmp_path / "other"), parts[0], parts[2], cwd=tmp_path)
    assert refused.returncode == 1 and "Shard 1/3 is missing" in refused.stderr
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_find_returns_the_same_pictures_on_both_back_ends(tmp_path, tiny_clip_dir):
    pytest.importorskip("torch")
    from bot.build import BuildOptions, StoreBuilder
    from bot.encoder import ClipEncoder
    from tests.fixtures import make_image_folder

    folder = make_image_folder(tmp_path / "pictures", per_class=4, classes=("red_circle", "blue_square", "green_cross"))
    encoder = ClipEncoder.load(str(tiny_clip_dir), device="cpu", precision="fp32")
    options = BuildOptions(dataset=str(folder), workers=0, progress=False, imagenet_captions=False)
    store = StoreBuilder(encoder, options).build(tmp_path / "store")
    ok_json(clipbot("export-milvus", "--store", str(store), "--no-progress", "--json", cwd=tmp_path))
    env = {"CLIPBOT_STORE": str(store), "CLIPBOT_DEVICE": "cpu"}
    # The process loads torch (seconds), so one query, with label and offset; the exact page comes in-process.
    found = ok_json(clipbot("find", "a red circle", "--k", "3", "--offset", "1", "--label", "blue_square", "--json",
                            "--backend", "milvus", cwd=tmp_path, **env))
    exact = SearchService(encoder, EmbeddingStore.load(store)).find("a red circle", 3, offset=1, label="blue_square")
    assert [(i["rank"], i["id"], i["label"]) for i in found["images"]] == \
           [(hit.rank, hit.id, hit.label) for hit in exact.images]
    assert [i["rank"] for i in found["images"]] == [2, 3, 4]
