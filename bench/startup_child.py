"""One start-up, in a fresh process: load everything a search needs, then report time and memory as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

LAUNCHED = time.perf_counter()


def main() -> int:
    """Load the tutorial way or clipbot's way, then print one JSON line and exit."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("ours", "tutorial"))
    parser.add_argument("store")
    parser.add_argument("--model", required=True)
    parser.add_argument("--verify", default="quick", choices=("quick", "full"))
    args = parser.parse_args()
    from bench.common import memory_status

    phases: dict[str, float] = {}
    started = time.perf_counter()
    if args.mode == "ours":
        from bot.engine import load_engine

        phases["imports_s"] = time.perf_counter() - started
        engine = load_engine(args.store, model=args.model, verify=args.verify)
        phases["ready_s"] = time.perf_counter() - LAUNCHED
        phases["engine_s"] = engine.load_seconds
        extra = {"dtype": engine.encoder.info.dtype, "images": len(engine.store)}
        ready_memory = memory_status()
        engine.service.find("a photo of a dog", 4)
        engine.service.similar(picture(), 4)
    else:
        import numpy as np
        from transformers import CLIPModel, CLIPProcessor

        phases["imports_s"] = time.perf_counter() - started
        model = CLIPModel.from_pretrained(args.model).eval()
        processor = CLIPProcessor.from_pretrained(args.model)
        vectors = np.load(os.path.join(args.store, "images.npy"))  # the tutorials load the matrix whole
        captions = np.load(os.path.join(args.store, "captions.npy"))
        with open(os.path.join(args.store, "captions.json"), encoding="utf-8") as handle:
            json.load(handle)
        phases["ready_s"] = time.perf_counter() - LAUNCHED
        extra = {
            "dtype": str(next(model.parameters()).dtype),
            "images": len(vectors),
            "captions": len(captions),
        }
        ready_memory = memory_status()
        import torch

        with torch.no_grad():
            text = model.get_text_features(
                **processor(
                    text=["a photo of a dog"], padding="max_length", max_length=77, return_tensors="pt"
                )
            )
            image = model.get_image_features(**processor(images=picture(), return_tensors="pt"))
        for features in (text, image):
            query = getattr(features, "pooler_output", features)[0].numpy()
            np.argsort(-(vectors @ query))[:4]
    print(json.dumps({"phases": phases, "memory": ready_memory, "after_queries": memory_status(), **extra}))
    sys.stdout.flush()
    return 0


def picture():
    """A 500x375 photo-like picture for the first /similar."""
    from bench.common import photo_like

    return photo_like(500, 375, seed=1)


if __name__ == "__main__":
    sys.exit(main())
