"""Query vectors for asyncio callers: CPU work in an executor, encoding awaited on the event loop.

When every request holds an executor thread while it waits for the micro-batching encoder, a batch can never
hold more requests than there are threads, and more threads mean more CPU work competing with the event loop
for the GIL (26 ms of loop lag with 40 threads). Here the threads only decode pictures; the wait for the
encoder costs no thread, so a batch gathers every request in flight (docs/BENCHMARKS.md, "load").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np

from .images import open_image
from .preprocess import batch_pixels
from .search import SearchService


class QueryVectors:
    """Text and picture query vectors for `service`, computed without blocking the event loop."""

    def __init__(self, service: SearchService, executor: Executor) -> None:
        self.service = service
        self.executor = executor

    async def text(self, prompt: str) -> tuple[np.ndarray, str]:
        """The vector of a prompt with optional `-terms` and the prompt as shown; cached prompts skip the encoder.

        Checking, parsing and the cache lookup take microseconds and run on the loop.
        """
        query = self.service.text_query(prompt)
        if query.vector is not None:
            return query.vector, query.display
        vectors = await self._encode_texts(list(query.texts))
        return self.service.text_vector(query, vectors), query.display

    async def picture(self, data: bytes) -> np.ndarray:
        """The vector of an uploaded picture: decoded and preprocessed in the executor, then encoded."""
        loop = asyncio.get_running_loop()
        pixels = await loop.run_in_executor(self.executor, self._pixels, data)
        return (await self._encode_pixels(pixels))[0]

    def _pixels(self, data: bytes) -> np.ndarray:
        spec = self.service.encoder.pixel_spec
        return batch_pixels([open_image(data, draft_size=spec.resize)], spec)

    async def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        encoder = self.service.encoder
        submit = getattr(encoder, "submit_texts", None)
        if submit is not None:  # the micro-batching encoder: await its future, holding no thread
            return await asyncio.wrap_future(submit(texts))
        return await asyncio.get_running_loop().run_in_executor(self.executor, encoder.encode_texts, texts)

    async def _encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        encoder = self.service.encoder
        submit = getattr(encoder, "submit_pixels", None)
        if submit is not None:
            return await asyncio.wrap_future(submit(pixels))
        return await asyncio.get_running_loop().run_in_executor(self.executor, encoder.encode_pixels, pixels)
