"""The Milvus back end against Milvus Lite files in temp directories: export, parity with exact search, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from bot.engine import open_index
from bot.errors import ConfigError, StoreError
from bot.index import ExactIndex
from bot.milvus import (
    LITE_FILE,
    MilvusConnection,
    MilvusIndex,
    collection_names,
    export_store,
    index_settings,
    redact,
)
from bot.search import SearchService
from bot.store import EmbeddingStore
from tests import storekit

DIM = 32
LABELS = ["cat", "dog", "fish", "bird"]


def unit_rows(rng: np.random.Generator, rows: int, dim: int = DIM) -> np.ndarray:
    """Random unit vectors: continuous, so no two scores tie unless a test makes them."""
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


CENTRES = unit_rows(np.random.default_rng(123), 20)


def clustered_rows(rng: np.random.Generator, rows: int, centres: np.ndarray = CENTRES) -> np.ndarray:
    """Unit vectors around a few centres, shaped like picture embeddings rather than uniform on the sphere."""
    clusters, dim = centres.shape
    vectors = centres[rng.integers(0, clusters, rows)] + 0.35 * unit_rows(rng, rows, dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def write_store(path: Path, *, rows: int = 600, seed: int = 0, duplicates: int = 0, clustered: bool = False,
                fingerprint: str = "fp-test") -> EmbeddingStore:
    """A store of hand-made vectors; `duplicates` copies row 0 into the last rows, to force exact ties."""
    rng = np.random.default_rng(seed)
    vectors = clustered_rows(rng, rows) if clustered else unit_rows(rng, rows)
    if duplicates:
        vectors[-duplicates:] = vectors[0]
    labels = rng.integers(0, len(LABELS), rows)
    return EmbeddingStore.load(storekit.write_store(
        path, vectors, labels, LABELS, unit_rows(rng, 12), [f"caption {i}" for i in range(12)],
        fingerprint=fingerprint,
    ))


def ids(results) -> list[list[int]]:
    return [[hit.index for hit in hits] for hits in results]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> EmbeddingStore:
    """A store exported (FLAT) to the default Milvus Lite file inside it."""
    store = write_store(tmp_path_factory.mktemp("milvus") / "store", duplicates=5)
    export_store(store, progress=False)
    return store


@pytest.fixture(scope="module")
def milvus(exported):
    with MilvusIndex.connect(exported) as index:
        yield index


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return unit_rows(np.random.default_rng(99), 16)


def test_export_writes_the_lite_file_next_to_the_vectors(exported, milvus):
    assert (exported.path / LITE_FILE).is_dir()
    assert milvus.image_count == len(exported) and milvus.caption_count == len(exported.captions)
    assert milvus.describe()["index"] == "flat"


@pytest.mark.parametrize("k", [1, 7, 50])
def test_flat_search_returns_the_exact_ids_in_order(exported, milvus, queries, k):
    exact = ExactIndex(exported).search_images(queries, k)
    found = milvus.search_images(queries, k)
    assert ids(found) == ids(exact)
    assert np.allclose([h.score for r in found for h in r], [h.score for r in exact for h in r], atol=1e-5)


@pytest.mark.parametrize(("label", "offset"), [(None, 10), (2, 0), (1, 4), (3, 40)])
def test_label_filter_and_offset_pages_match_exact(exported, milvus, queries, label, offset):
    exact = ExactIndex(exported).search_images(queries, 8, offset=offset, label=label)
    found = milvus.search_images(queries, 8, offset=offset, label=label)
    assert ids(found) == ids(exact)
    if label is not None:
        assert all(int(exported.labels[hit.index]) == label for hits in found for hit in hits)


def test_pages_chain_into_the_full_ranking(milvus, queries):
    pages = [milvus.search_images(queries[:1], 5, offset=offset)[0] for offset in (0, 5, 10)]
    assert [hit.index for page in pages for hit in page] == ids(milvus.search_images(queries[:1], 15))[0]


def test_exact_ties_are_ordered_by_row_like_the_exact_index(exported, milvus):
    # Rows 0 and the last five hold the same vector; asking for it must list them in row order.
    query = np.asarray(exported.image_vectors[:1])
    tied = [0, *range(len(exported) - 5, len(exported))]
    assert ids(milvus.search_images(query, 6))[0] == tied == ids(ExactIndex(exported).search_images(query, 6))[0]
    assert ids(milvus.search_images(query, 3, offset=2)) == ids(ExactIndex(exported).search_images(query, 3, offset=2))


def test_caption_search_matches_exact(exported, milvus, queries):
    assert ids(milvus.search_captions(queries, 5)) == ids(ExactIndex(exported).search_captions(queries, 5))


def test_search_service_gives_the_same_page_on_either_back_end(exported, milvus, queries):
    exact, remote = SearchService(None, exported), SearchService(None, exported, milvus)
    for kwargs in ({}, {"label": "dog", "offset": 3}):
        a = exact.find_by_vector(queries[0], 6, **kwargs)
        b = remote.find_by_vector(queries[0], 6, **kwargs)
        assert [(h.id, h.label, h.rank) for h in a.images] == [(h.id, h.label, h.rank) for h in b.images]


def test_open_index_selects_milvus_by_name(exported):
    index = open_index(exported, "milvus", milvus_uri=str(exported.path / LITE_FILE))
    try:
        assert index.name == "milvus"
    finally:
        index.close()


def test_connect_refuses_a_missing_database(tmp_path):
    store = write_store(tmp_path / "store", rows=20)
    with pytest.raises(StoreError, match=r"export-milvus --store .*store"):
        MilvusIndex.connect(store)
    assert not (tmp_path / "store" / LITE_FILE).exists()  # connecting never creates a database


def test_connect_refuses_collections_of_another_store(tmp_path):
    uri = str(tmp_path / "shared.db")
    other = write_store(tmp_path / "other", rows=30, seed=1)
    export_store(other, uri, progress=False)
    store = write_store(tmp_path / "store", rows=30, seed=2)
    with pytest.raises(StoreError, match=r"no collection .*another store.*export-milvus --store") as caught:
        MilvusIndex.connect(store, uri)
    assert collection_names(other.manifest).images in str(caught.value)


def test_connect_refuses_a_foreign_digest_and_a_short_count(tmp_path):
    store = write_store(tmp_path / "store", rows=40)
    uri = str(tmp_path / "m.db")
    export_store(store, uri, progress=False)
    names = collection_names(store.manifest)
    with MilvusConnection(uri) as connection:
        connection.client.delete(names.images, filter="index >= 35")
    with pytest.raises(StoreError, match=r"holds 35 vectors but the store has 40.*--drop"):
        MilvusIndex.connect(store, uri)
    with MilvusConnection(uri) as connection:
        connection.client.alter_collection_properties(names.images, properties={"clipbot.store_digest": "0" * 64})
    with pytest.raises(StoreError, match=r"another store or build.*export-milvus --store .* --drop"):
        MilvusIndex.connect(store, uri)


def test_connect_refuses_an_unfinished_export(tmp_path):
    store = write_store(tmp_path / "store", rows=20)
    uri = str(tmp_path / "m.db")
    export_store(store, uri, progress=False)
    with MilvusConnection(uri) as connection:
        connection.client.alter_collection_properties(collection_names(store.manifest).captions,
                                                      properties={"clipbot.complete": "0"})
    with pytest.raises(StoreError, match="did not finish.*--drop"):
        MilvusIndex.connect(store, uri)


def test_export_refuses_to_overwrite_without_drop_and_replaces_with_it(tmp_path):
    store = write_store(tmp_path / "store", rows=25)
    export_store(store, progress=False)
    with pytest.raises(StoreError, match="--drop"):
        export_store(store, progress=False)
    report = export_store(store, drop=True, index="ivf_flat", batch_size=7, progress=False)
    assert (report.images, report.captions, report.index) == (25, 12, "ivf_flat")
    with MilvusIndex.connect(store) as index:
        assert index.index_type == "ivf_flat"


@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat"])
def test_approximate_indexes_keep_recall_at_10_high(tmp_path, kind):
    store = write_store(tmp_path / "store", rows=2000, clustered=True)
    export_store(store, index=kind, progress=False)
    queries = clustered_rows(np.random.default_rng(7), 20)  # the store's centres, fresh noise
    exact = ids(ExactIndex(store).search_images(queries, 10))
    with MilvusIndex.connect(store) as index:
        found = ids(index.search_images(queries, 10))
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found)])
    assert recall >= 0.9, f"{kind} recall@10 {recall:.2f}"


def test_a_uri_that_is_neither_server_nor_lite_file_is_a_config_error(tmp_path):
    store = write_store(tmp_path / "store", rows=5)
    with pytest.raises(ConfigError, match=r"\.db"):
        MilvusIndex.connect(store, str(tmp_path / "milvus.sqlite"))
    with pytest.raises(ConfigError, match="ivf_pq"):
        export_store(store, index="ivf_pq", progress=False)


def test_redact_hides_credentials_in_a_uri():
    assert redact("https://root:Milvus@example.com:19530") == "https://***@example.com:19530"
    assert redact("./milvus.db") == "./milvus.db"


def test_ivf_lists_never_outnumber_rows():
    assert index_settings("ivf_flat", 3)[0]["nlist"] == 1
    assert index_settings("ivf_flat", 2000)[0]["nlist"] == 45  # sqrt(rows)
    assert index_settings("ivf_flat", 400)[0]["nlist"] == 10  # 400 // 39, not sqrt's 20
    build, search = index_settings("ivf_flat", 1_000_000)
    assert build["nlist"] == 1000 and 8 <= search["nprobe"] <= build["nlist"]


def test_the_lite_server_stops_when_its_last_user_closes(tmp_path):
    from milvus_lite.server_manager import server_manager_instance

    store = write_store(tmp_path / "store", rows=10)
    export_store(store, progress=False)
    path = str((store.path / LITE_FILE).resolve())
    first, second = MilvusIndex.connect(store), MilvusIndex.connect(store)
    first.close()
    assert ids(second.search_images(np.asarray(store.image_vectors[:1]), 1)) == [[0]]  # still served
    second.close()
    second.close()  # closing twice is harmless
    assert path not in server_manager_instance._servers


def test_an_unreachable_server_is_a_config_error_without_the_token(tmp_path):
    store = write_store(tmp_path / "store", rows=5)
    with pytest.raises(ConfigError, match="CLIPBOT_MILVUS_URI") as caught:
        MilvusIndex.connect(store, "http://user:hunter2hunter2@127.0.0.1:1", token="s3cret-token")
    assert "hunter2" not in str(caught.value) and "s3cret" not in str(caught.value)


def test_an_index_build_retried_after_it_finished_is_accepted(tmp_path):
    # pymilvus retries a build that outlasts the gRPC keep-alive; the retry finds the index already there.
    from pymilvus.exceptions import MilvusException

    from bot.milvus import create_vector_index

    store = write_store(tmp_path / "store", rows=50)
    export_store(store, index="hnsw", progress=False)
    name = collection_names(store.manifest).images
    with MilvusConnection(str(store.path / LITE_FILE)) as connection:
        create_vector_index(connection.client, name, "hnsw", 50, wait=False)
        with pytest.raises(MilvusException):
            create_vector_index(connection.client, name, "ivf_flat", 50, wait=False)
