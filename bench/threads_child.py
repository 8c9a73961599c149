"""In a fresh process (OpenMP's wait policy is fixed when torch loads): median text and image encode times."""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    """Encode prompts and a picture with clipbot's encoder; print medians in ms as one JSON line."""
    import numpy as np

    from bench.common import prompts
    from bot.encoder import ClipEncoder

    encoder = ClipEncoder.load(sys.argv[1], device="cpu", precision=sys.argv[2])
    texts = prompts(23, seed=11)
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for text in texts[:3]:
        encoder.encode_texts([text])
    encoder.encode_pixels(pixels)
    text_ms, image_ms = [], []
    for text in texts[3:]:
        started = time.perf_counter()
        encoder.encode_texts([text])
        text_ms.append((time.perf_counter() - started) * 1e3)
    for _ in range(6):
        started = time.perf_counter()
        encoder.encode_pixels(pixels)
        image_ms.append((time.perf_counter() - started) * 1e3)
    print(json.dumps({"text_ms": float(np.median(text_ms)), "image_ms": float(np.median(image_ms))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
