"""The micro-batching front of the encoder, driven by a fake encoder that records every batch it is given."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bot.batching import BatchingEncoder
from bot.errors import BusyError, EncoderError
from tests.encoderkit import DIM, PATIENCE_S, FakeEncoder, wait_until


def pixels_of(*values: float) -> np.ndarray:
    pixels = np.zeros((len(values), 3, 8, 8), np.float32)
    pixels[:, 0, 0, 0] = values
    return pixels


def queue_behind_a_busy_worker(fake: FakeEncoder, batching: BatchingEncoder, pool: ThreadPoolExecutor, calls):
    """Start one request that holds the worker, then submit `calls`; returns (first future, their futures)."""
    fake.hold()
    first = pool.submit(batching.encode_texts, ["100"])
    assert fake.entered.wait(PATIENCE_S)
    futures = [pool.submit(call) for call in calls]
    wait_until(lambda: batching.queue_depth == len(calls))
    return first, futures


def test_requests_submitted_together_are_encoded_as_one_batch(fake, batching) -> None:
    with ThreadPoolExecutor(16) as pool:
        first, futures = queue_behind_a_busy_worker(
            fake, batching, pool, [lambda i=i: batching.encode_texts([str(i)]) for i in range(10)]
        )
        fake.release()
        results = [future.result(PATIENCE_S) for future in futures]
    assert first.result(PATIENCE_S)[0, 0] == 100
    assert fake.batches == [("text", 1), ("text", 10)]
    assert [row[0, 0] for row in results] == list(range(10))
    assert batching.stats.batches == 2 and batching.stats.largest == 10 and batching.stats.requests == 11


def test_batches_are_capped_at_max_batch(fake) -> None:
    front = BatchingEncoder(fake, max_batch=4, max_wait_ms=5.0)
    try:
        with ThreadPoolExecutor(16) as pool:
            _, futures = queue_behind_a_busy_worker(
                fake, front, pool, [lambda i=i: front.encode_texts([str(i)]) for i in range(10)]
            )
            fake.release()
            assert [f.result(PATIENCE_S)[0, 0] for f in futures] == list(range(10))
    finally:
        front.close()
    assert [size for _, size in fake.batches] == [1, 4, 4, 2]


def test_each_caller_gets_its_own_rows_in_order(fake, batching) -> None:
    calls = [
        lambda: batching.encode_texts(["1", "2", "3"]),
        lambda: batching.encode_pixels(pixels_of(7.0, 8.0)),
        lambda: batching.encode_texts(["4"]),
        lambda: batching.encode_pixels(pixels_of(9.0)),
        lambda: batching.encode_texts(["5", "6"]),
    ]
    with ThreadPoolExecutor(8) as pool:
        _, futures = queue_behind_a_busy_worker(fake, batching, pool, calls)
        fake.release()
        results = [future.result(PATIENCE_S) for future in futures]
    assert results[0][:, 0].tolist() == [1, 2, 3] and not results[0][:, 1].any()
    assert results[1][:, 0].tolist() == [7, 8] and results[1][:, 1].all()
    assert results[2][:, 0].tolist() == [4]
    assert results[3][:, 0].tolist() == [9] and results[3][:, 1].all()
    assert results[4][:, 0].tolist() == [5, 6]
    # After the held first request: one text batch and one picture batch for all five callers.
    assert fake.batches[1:] == [("text", 6), ("pixels", 3)]


def test_the_same_prompt_from_many_callers_is_encoded_once(fake, batching) -> None:
    with ThreadPoolExecutor(8) as pool:
        _, futures = queue_behind_a_busy_worker(
            fake, batching, pool, [lambda: batching.encode_texts(["42"]) for _ in range(5)]
        )
        fake.release()
        results = [future.result(PATIENCE_S) for future in futures]
    assert fake.texts_seen[-1] == ["42"]
    assert all(result.shape == (1, DIM) and result[0, 0] == 42 for result in results)


def test_an_encoder_error_reaches_every_waiting_caller_and_the_worker_survives(fake, batching) -> None:
    with ThreadPoolExecutor(8) as pool:
        first, futures = queue_behind_a_busy_worker(
            fake, batching, pool, [lambda i=i: batching.encode_texts([str(i)]) for i in range(5)]
        )
        fake.fail = RuntimeError("out of memory")
        fake.release()
        for future in [first, *futures]:
            with pytest.raises(EncoderError, match="encoder failed on this request") as raised:
                future.result(PATIENCE_S)
            assert "out of memory" in str(raised.value.__cause__)  # the detail stays for the log
    fake.fail = None
    assert batching.encode_texts(["3"])[0, 0] == 3
    assert batching.stats.failures >= 1


def test_a_lone_request_does_not_wait_for_company(fake) -> None:
    # With a ten-minute gathering window, only skipping the wait lets a lone request finish at all.
    front = BatchingEncoder(fake, max_wait_ms=600_000)
    try:
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(front.encode_texts, ["5"]).result(PATIENCE_S)[0, 0] == 5
    finally:
        front.close()


def test_a_full_queue_refuses_with_busy_error(fake) -> None:
    front = BatchingEncoder(fake, queue_limit=3)
    try:
        with ThreadPoolExecutor(8) as pool:
            _, futures = queue_behind_a_busy_worker(
                fake, front, pool, [lambda i=i: front.encode_texts([str(i)]) for i in range(3)]
            )
            with pytest.raises(BusyError):
                front.encode_texts(["9"])
            fake.release()
            assert [f.result(PATIENCE_S)[0, 0] for f in futures] == [0, 1, 2]
    finally:
        fake.release()
        front.close()


def test_close_finishes_queued_work_then_refuses_new_requests(fake) -> None:
    front = BatchingEncoder(fake)
    with ThreadPoolExecutor(8) as pool:
        first, futures = queue_behind_a_busy_worker(
            fake, front, pool, [lambda i=i: front.encode_texts([str(i)]) for i in range(4)]
        )
        closing = pool.submit(front.close)
        wait_until(lambda: front._closed)
        fake.release()
        closing.result(PATIENCE_S)
        assert first.result(PATIENCE_S)[0, 0] == 100
        assert [f.result(PATIENCE_S)[0, 0] for f in futures] == [0, 1, 2, 3]
    with pytest.raises(EncoderError, match="shutting down"):
        front.encode_texts(["1"])


def test_empty_requests_return_empty_arrays_without_the_encoder(fake, batching) -> None:
    assert batching.encode_texts([]).shape == (0, DIM)
    assert batching.encode_pixels(np.zeros((0, 3, 8, 8), np.float32)).shape == (0, DIM)
    assert fake.batches == []


def test_malformed_pixels_are_refused_in_the_callers_thread(fake, batching) -> None:
    with pytest.raises(ValueError, match="pixels must be"):
        batching.encode_pixels(np.zeros((3, 8, 8), np.float32))
    assert fake.batches == []
