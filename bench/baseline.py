"""The baseline: CLIP the way the tutorials serve it, one query at a time, fp32, nothing cached or batched."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bot.encoder import pooled
from bot.search import CaptionHit, FindResult, ImageHit, SimilarResult
from bot.store import EmbeddingStore


class TutorialClip:
    """`CLIPProcessor` + `get_*_features` per query, text padded to 77 like clip.tokenize."""

    def __init__(self, model_dir: str | Path) -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(model_dir).eval()
        self.processor = CLIPProcessor.from_pretrained(model_dir)
        # A bot that shares one model between threads must still run it one query at a time.
        self.lock = threading.Lock()

    def text_vector(self, text: str) -> np.ndarray:
        """One prompt to a unit vector. Blocking."""
        inputs = self.processor(
            text=[text], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        )
        with self.lock, torch.no_grad():
            features = pooled(self.model.get_text_features(**inputs))
        vector = features[0].numpy()
        return vector / np.linalg.norm(vector)

    def image_vector(self, picture: Image.Image) -> np.ndarray:
        """One picture to a unit vector. Blocking."""
        inputs = self.processor(images=picture, return_tensors="pt")
        with self.lock, torch.no_grad():
            features = pooled(self.model.get_image_features(**inputs))
        vector = features[0].numpy()
        return vector / np.linalg.norm(vector)


def full_top_k(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The tutorials' search: score every row, sort them all, keep the first k."""
    scores = vectors @ query
    order = np.argsort(-scores)[:k]
    return order, scores[order]


class TutorialService:
    """/find and /similar the tutorial way, over a store's vectors loaded whole into memory."""

    def __init__(self, clip: TutorialClip, store: EmbeddingStore) -> None:
        self.clip = clip
        self.store = store
        self.image_vectors = np.array(store.image_vectors)  # np.load without mmap: a private copy
        self.caption_vectors = np.array(store.caption_vectors)

    def find(self, text: str, k: int = 4) -> FindResult:
        """Encode, score everything, sort."""
        rows, scores = full_top_k(self.image_vectors, self.clip.text_vector(text), k)
        return FindResult(query=text, images=self._hits(rows, scores))

    def similar_bytes(self, data: bytes, k: int = 4) -> SimilarResult:
        """Decode the upload in full, then encode and search images and captions."""
        picture = Image.open(io.BytesIO(data)).convert("RGB")
        vector = self.clip.image_vector(picture)
        rows, scores = full_top_k(self.image_vectors, vector, k)
        caption_rows, caption_scores = full_top_k(self.caption_vectors, vector, k)
        captions = [
            CaptionHit(rank=rank, score=float(score), text=self.store.captions[int(row)].text)
            for rank, (row, score) in enumerate(zip(caption_rows, caption_scores), start=1)
        ]
        return SimilarResult(captions=captions, images=self._hits(rows, scores))

    def _hits(self, rows: np.ndarray, scores: np.ndarray) -> list[ImageHit]:
        hits = []
        for rank, (row, score) in enumerate(zip(rows, scores), start=1):
            item = self.store.item(int(row))
            hits.append(ImageHit(rank=rank, score=float(score), id=item.id, label=item.label, index=int(row)))
        return hits
