"""Exact top-k and the search service on hand-made vectors with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.errors import InvalidQueryError, UnknownItemError
from bot.index import ExactIndex, top_k
from bot.search import SearchService, VectorCache, parse_query
from bot.store import EmbeddingStore
from tests.storekit import unit_rows, write_store

AXES = np.eye(4, dtype=np.float32)


class FakeEncoder:
    """Texts and pictures mapped to fixed vectors; counts calls so caching can be checked."""

    def __init__(self) -> None:
        self.words = {"cat": AXES[0], "dog": AXES[1], "snow": AXES[2], "car": AXES[3]}
        self.text_calls = 0

    def encode_texts(self, texts):
        self.text_calls += 1
        out = []
        for text in texts:
            vector = sum((self.words[w] for w in text.split() if w in self.words), np.zeros(4, np.float32))
            out.append(vector)
        return unit_rows(np.asarray(out) + 1e-6)

    def encode_images(self, images):
        # A picture's red channel says "cat", green "dog", blue "snow".
        out = [np.asarray(img.resize((1, 1))).reshape(3).astype(np.float32).tolist() + [0.0] for img in images]
        return unit_rows(np.asarray(out) + 1e-6)


@pytest.fixture
def service(tmp_path: Path) -> SearchService:
    # Six pictures: pure cat, pure dog, dog in snow, cat in snow, snow, car.
    vectors = np.array([
        [1, 0, 0, 0], [0, 1, 0, 0], [0, 0.8, 0.6, 0], [0.6, 0, 0.8, 0], [0, 0, 1, 0], [0, 0, 0, 1],
    ], dtype=np.float32) + np.arange(6)[:, None] * 1e-4
    captions = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    path = write_store(tmp_path / "s", vectors, [0, 1, 1, 0, 2, 2], ["cat", "dog", "other"], captions,
                       ["a cat", "a dog", "snow"])
    return SearchService(FakeEncoder(), EmbeddingStore.load(path))


def test_top_k_orders_by_score_then_row() -> None:
    matrix = unit_rows(np.array([[1, 0], [1, 0], [0, 1], [1, 0.1], [1, 0]], dtype=np.float32))
    hits = top_k(matrix, np.array([1, 0], dtype=np.float32), 4)[0]
    assert [h.index for h in hits] == [0, 1, 4, 3]
    assert [h.index for h in top_k(matrix, np.array([1, 0], dtype=np.float32), 2, offset=2)[0]] == [4, 3]


def test_top_k_ties_at_the_cut_are_deterministic() -> None:
    matrix = np.tile(np.array([[1.0, 0.0]], np.float32), (100, 1))
    for k in (1, 7, 50):
        assert [h.index for h in top_k(matrix, np.array([1, 0], np.float32), k)[0]] == list(range(k))


def test_top_k_matches_a_full_sort_across_blocks(monkeypatch) -> None:
    import bot.index

    monkeypatch.setattr(bot.index, "BLOCK_ROWS", 64)
    rng = np.random.default_rng(3)
    matrix = unit_rows(rng.normal(size=(1000, 16)))
    queries = unit_rows(rng.normal(size=(5, 16)))
    allowed = rng.random(1000) > 0.5
    for q, hits in enumerate(top_k(matrix, queries, 10, offset=3, allowed=allowed)):
        scores = matrix @ queries[q]
        scores[~allowed] = -np.inf
        expected = np.lexsort((np.arange(1000), -scores))[3:13]
        assert [h.index for h in hits] == expected.tolist()
        np.testing.assert_allclose([h.score for h in hits], scores[expected], rtol=1e-5)


def test_top_k_returns_fewer_when_the_filter_allows_fewer() -> None:
    matrix = unit_rows(np.eye(3, dtype=np.float32))
    hits = top_k(matrix, np.ones(3, np.float32), 3, allowed=np.array([True, False, True]))[0]
    assert [h.index for h in hits] == [0, 2]


def test_find_returns_ranked_images_with_labels(service: SearchService) -> None:
    result = service.find("dog", 3)
    assert [(h.rank, h.id, h.label) for h in result.images[:2]] == [(1, "train-1", "dog"), (2, "train-2", "dog")]
    assert result.images[2].rank == 3 and result.images[1].score > result.images[2].score
    assert result.images[0].score == pytest.approx(1.0, abs=1e-3)
    assert result.to_json()["images"][0] == {"rank": 1, "score": 1.0, "id": "train-1", "label": "dog"}


def test_negative_terms_steer_away(service: SearchService) -> None:
    assert service.find("dog", 1).images[0].id == "train-1"
    assert service.find("dog snow", 1).images[0].id == "train-2"
    plain = {h.id: h.score for h in service.find("cat", 6).images}
    steered = {h.id: h.score for h in service.find("cat -snow", 6).images}
    assert plain["train-3"] > 0.5 > 0.1 > steered["train-3"]
    assert max(steered, key=steered.get) == "train-0"


def test_label_filter_and_paging(service: SearchService) -> None:
    assert [h.id for h in service.find("snow", 2, label="cat").images] == ["train-3", "train-0"]
    first = service.find("snow", 2)
    second = service.find_by_vector(first.vector, 2, offset=2)
    assert [h.rank for h in second.images] == [3, 4]
    assert not {h.id for h in first.images} & {h.id for h in second.images}
    with pytest.raises(UnknownItemError, match="no label 'horse'"):
        service.find("snow", 2, label="horse")


def test_text_plus_image_blends_both(service: SearchService) -> None:
    green = Image.new("RGB", (8, 8), (0, 255, 0))  # a "dog" picture
    assert service.find("snow", 1, image=green).images[0].id == "train-2"


def test_similar_returns_captions_and_images(service: SearchService) -> None:
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    result = service.similar(red, 2)
    assert result.captions[0].text == "a cat" and result.captions[0].rank == 1
    assert result.images[0].id == "train-0"
    assert set(result.to_json()) == {"captions", "images"}


def test_similar_to_item_excludes_the_item_itself(service: SearchService) -> None:
    result = service.similar_to_item(2, 2)
    assert result.source.id == "train-2"
    assert "train-2" not in [h.id for h in result.images]
    with pytest.raises(UnknownItemError):
        service.similar_to_item(99)


def test_repeated_prompts_hit_the_cache(service: SearchService) -> None:
    service.find("dog", 1)
    service.find("  dog ", 2)
    assert service.encoder.text_calls == 1


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_refused(service: SearchService, prompt: str) -> None:
    with pytest.raises(InvalidQueryError, match="prompt is empty"):
        service.find(prompt)


def test_only_negative_terms_is_refused(service: SearchService) -> None:
    with pytest.raises(InvalidQueryError, match="only `-terms`"):
        service.find("-snow")


@pytest.mark.parametrize("k", [0, -1, 51])
def test_count_out_of_range_is_refused(service: SearchService, k: int) -> None:
    with pytest.raises(InvalidQueryError, match="between 1 and 50"):
        service.find("dog", k)


def test_parse_query_splits_negative_terms() -> None:
    parsed = parse_query('a t-shirt on a dog -snow -"red car"')
    assert parsed.positive == "a t-shirt on a dog"
    assert parsed.negatives == ("snow", "red car")


def test_vector_cache_evicts_least_recent() -> None:
    cache = VectorCache(2)
    cache.put("a", np.zeros(2))
    cache.put("b", np.ones(2))
    cache.get("a")
    cache.put("c", np.ones(2))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None


def test_exact_index_label_mask_is_cached(service: SearchService) -> None:
    index = service.index
    assert isinstance(index, ExactIndex)
    index.search_images(AXES[:1], 1, label=0)
    assert 0 in index._label_masks
