"""Micro-batching: concurrent encode requests meet on one worker thread and run as one batch."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .errors import BusyError, ClipbotError, EncoderError
from .preprocess import batch_pixels

log = logging.getLogger(__name__)

_STOP = None  # the sentinel close() queues behind the last request


@dataclass
class _Request:
    kind: str  # "text" or "pixels"
    payload: list[str] | np.ndarray
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        return len(self.payload)


@dataclass
class BatchStats:
    """Counters for /about and the metrics endpoint."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    failures: int = 0
    requests: int = 0


class BatchingEncoder:
    """Wraps a `ClipEncoder`; `encode_texts`/`encode_images` block the caller until its batch is done.

    A request that finds the encoder idle runs at once; only when requests are seen arriving together does
    the worker wait up to `max_wait_ms` for more, so one user never pays for batching.
    """

    def __init__(
        self, encoder, *, max_batch: int = 32, max_wait_ms: float = 5.0, queue_limit: int = 256
    ) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue_limit = queue_limit
        self.stats = BatchStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        self._submit_lock = threading.Lock()  # makes "not closed, then queued" one step against close()
        self._busy = False  # the last batch merged several requests: traffic is concurrent, waiting pays
        self._thread = threading.Thread(target=self._run, name="clip-encoder", daemon=True)
        self._thread.start()

    @property
    def pixel_spec(self):
        """The wrapped encoder's preprocessing."""
        return self.encoder.pixel_spec

    @property
    def info(self):
        """The wrapped encoder's identity."""
        return self.encoder.info

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the encoder thread."""
        return self._queue.qsize()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised text vectors, encoded together with whatever else is waiting. Blocking."""
        return self.submit_texts(texts).result()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Normalised picture vectors; preprocessing runs in the caller's thread. Blocking."""
        return self.encode_pixels(batch_pixels(list(images), self.encoder.pixel_spec))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Normalised vectors of preprocessed (n, 3, H, W) pixels. Blocking."""
        return self.submit_pixels(pixels).result()

    def submit_texts(self, texts: Sequence[str]) -> Future:
        """Queue texts; the future's result is their normalised vectors. Raises BusyError when full."""
        return self._submit(_Request("text", list(texts)))

    def submit_pixels(self, pixels: np.ndarray) -> Future:
        """Queue preprocessed (n, 3, H, W) pixels; the future's result is their normalised vectors."""
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 4:  # refused here, so that one malformed request cannot fail a whole batch
            raise ValueError(f"pixels must be (n, 3, height, width), got shape {pixels.shape}")
        return self._submit(_Request("pixels", pixels))

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued work, then stop the worker thread."""
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _submit(self, request: _Request) -> Future:
        if request.size == 0:
            request.future.set_result(np.zeros((0, self.encoder.info.dim), np.float32))
            return request.future
        with self._submit_lock:
            if self._closed:
                raise EncoderError("The encoder is shutting down.")
            if self._queue.qsize() >= self.queue_limit:
                raise BusyError("clipbot is very busy right now; please try again in a few seconds.")
            self._queue.put(request)
        return request.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._gather(first)
            self._busy = len(batch) > 1
            for kind in ("text", "pixels"):
                group = [r for r in batch if r.kind == kind]
                if group:
                    self._encode(kind, group)
            if stop:
                return

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        """Take what is already queued; while traffic is concurrent, wait up to max_wait for more."""
        batch, size = [first], first.size
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_batch:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if not (self._busy or len(batch) > 1) or remaining <= 0:
                    break
                try:
                    request = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if request is _STOP:
                return batch, True
            batch.append(request)
            size += request.size
        return batch, False

    def _encode(self, kind: str, group: list[_Request]) -> None:
        try:
            if kind == "text":
                vectors = self._encode_texts([text for request in group for text in request.payload])
            else:
                vectors = self.encoder.encode_pixels(np.concatenate([r.payload for r in group]))
        except Exception as error:  # the worker must survive any failure and report it to every caller
            self.stats.failures += 1
            log.exception("encoding a batch of %d %s requests failed", len(group), kind)
            for request in group:
                _settle(request.future, exception=_caller_error(error))
            return
        total = len(vectors)
        self.stats.batches += 1
        self.stats.requests += len(group)
        self.stats.items += total
        self.stats.largest = max(self.stats.largest, total)
        start = 0
        for request in group:
            _settle(request.future, result=vectors[start : start + request.size])
            start += request.size

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """Each distinct text once: many users often send the same prompt at the same time."""
        unique = list(dict.fromkeys(texts))
        vectors = self.encoder.encode_texts(unique)
        if len(unique) == len(texts):
            return vectors
        position = {text: i for i, text in enumerate(unique)}
        return vectors[[position[text] for text in texts]]


def _caller_error(error: Exception) -> ClipbotError:
    """A fresh error per waiting caller (one object raised in many threads tangles its traceback)."""
    failure: ClipbotError
    if isinstance(error, ClipbotError):
        try:
            failure = type(error)(error.message)
        except TypeError:  # a subclass with another constructor
            failure = EncoderError(error.message)
    else:
        # The details go to the log (with the traceback); users get a sentence, not torch's internals.
        failure = EncoderError("The encoder failed on this request; it has been logged. Please try again.")
    failure.__cause__ = error
    return failure


def _settle(
    future: Future, *, result: np.ndarray | None = None, exception: BaseException | None = None
) -> None:
    if future.done():  # cancelled by its caller: nobody is waiting any more
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
