"""A fake CLIP encoder that records every batch it is given and can be held busy, for batching tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from bot.preprocess import PixelSpec

DIM = 4
# How long a test waits for the worker thread to reach a state: a hang guard, never a speed requirement.
PATIENCE_S = 30.0


class FakeEncoder:
    """Texts `"n"` become rows [n, 0, 0, 0]; pixels become rows [pixels[i, 0, 0, 0], 1, 0, 0].

    `hold()` makes the next batch wait inside the encoder until `release()`, so that tests can queue
    requests behind a busy worker deterministically.
    """

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []
        self.texts_seen: list[list[str]] = []
        self.fail: Exception | None = None
        self.info = SimpleNamespace(dim=DIM)
        self.pixel_spec = PixelSpec(resize=8, crop=8)
        self._gate = threading.Event()
        self._gate.set()
        self.entered = threading.Event()

    def hold(self) -> None:
        self._gate.clear()
        self.entered.clear()

    def release(self) -> None:
        self._gate.set()

    def _enter(self, kind: str, size: int) -> None:
        self.entered.set()
        assert self._gate.wait(PATIENCE_S), "the test never released the encoder"
        self.batches.append((kind, size))
        if self.fail is not None:
            raise self.fail

    def encode_texts(self, texts):
        self._enter("text", len(texts))
        self.texts_seen.append(list(texts))
        rows = np.zeros((len(texts), DIM), np.float32)
        rows[:, 0] = [float(text) for text in texts]
        return rows

    def encode_pixels(self, pixels):
        self._enter("pixels", len(pixels))
        rows = np.zeros((len(pixels), DIM), np.float32)
        rows[:, 0] = pixels[:, 0, 0, 0]
        rows[:, 1] = 1.0
        return rows


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, "the worker never reached the expected state"
        time.sleep(0.001)


