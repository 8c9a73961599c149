"""QueryVectors: the bot's way to get query vectors on an event loop, without an executor thread per wait."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from bot.errors import InvalidImageError, InvalidQueryError
from bot.images import open_image
from bot.preprocess import batch_pixels
from bot.query_vectors import QueryVectors
from bot.search import SearchService
from tests.encoderkit import PATIENCE_S, FakeEncoder
from tests.storekit import tiny_jpeg


def service_over(encoder) -> SearchService:
    """A service whose text and picture paths work without a store (no search is made here)."""
    return SearchService(encoder, store=None, index=SimpleNamespace())


async def until(condition) -> None:
    deadline = asyncio.get_running_loop().time() + PATIENCE_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "never reached the expected state"
        await asyncio.sleep(0.001)


def test_a_batch_gathers_more_requests_than_the_executor_has_threads(fake, batching) -> None:
    """Ten prompts wait behind a busy encoder with one executor thread, and are then encoded as one batch."""
    with ThreadPoolExecutor(1) as executor:
        queries = QueryVectors(service_over(batching), executor)

        async def scenario():
            fake.hold()
            first = asyncio.create_task(queries.text("100"))
            await until(fake.entered.is_set)
            rest = [asyncio.create_task(queries.text(str(n))) for n in range(10)]
            await until(lambda: batching.queue_depth == 10)
            fake.release()
            return await asyncio.wait_for(asyncio.gather(first, *rest), PATIENCE_S)

        results = asyncio.run(scenario())
    assert [vector[0] for vector, _ in results] == [100, *range(10)]
    assert [display for _, display in results] == ["100", *map(str, range(10))]
    # Blocking an executor thread per wait would have allowed batches of one only.
    assert fake.batches == [("text", 1), ("text", 10)]


def test_text_vectors_equal_the_blocking_path_and_cached_prompts_skip_the_encoder(fake, batching) -> None:
    expected = service_over(FakeEncoder()).text_query_vector("3 -2 -\"1\"")
    with ThreadPoolExecutor(1) as executor:
        queries = QueryVectors(service_over(batching), executor)

        async def scenario():
            first = await queries.text("3 -2 -\"1\"")
            again = await queries.text("  3   -2 -\"1\" ")  # the same query, spaced differently
            return first, again

        (vector, display), (cached, _) = asyncio.run(scenario())
    np.testing.assert_allclose(vector, expected)
    assert display == '3 -2 -"1"'
    assert cached is not None and np.array_equal(cached, vector)
    assert fake.batches == [("text", 3)]


def test_picture_vectors_are_decoded_in_the_executor_and_match_the_blocking_path(fake, batching) -> None:
    data = tiny_jpeg((200, 30, 30))
    spec = fake.pixel_spec
    expected = FakeEncoder().encode_pixels(batch_pixels([open_image(data, draft_size=spec.resize)], spec))[0]
    with ThreadPoolExecutor(1) as executor:
        vector = asyncio.run(QueryVectors(service_over(batching), executor).picture(data))
    np.testing.assert_allclose(vector, expected)


def test_bad_input_fails_with_the_users_message(batching) -> None:
    with ThreadPoolExecutor(1) as executor:
        queries = QueryVectors(service_over(batching), executor)
        with pytest.raises(InvalidImageError):
            asyncio.run(queries.picture(b"this is not a picture"))
        with pytest.raises(InvalidQueryError, match="empty"):
            asyncio.run(queries.text("   "))


def test_an_encoder_without_futures_runs_in_the_executor(fake) -> None:
    with ThreadPoolExecutor(1) as executor:
        queries = QueryVectors(service_over(fake), executor)
        vector, _ = asyncio.run(queries.text("7"))
        picture = asyncio.run(queries.picture(tiny_jpeg((10, 10, 10))))
    assert vector[0] == 7 and picture[1] == 1.0
    assert fake.batches == [("text", 1), ("pixels", 1)]
