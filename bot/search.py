"""The search service: find, similar, combined and negative queries; synchronous, pure Python, no discord."""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image

from .errors import InvalidQueryError
from .index import ExactIndex, Hit, VectorIndex
from .store import EmbeddingStore

log = logging.getLogger(__name__)

MAX_K = 50
MAX_PROMPT_CHARS = 2000
# How strongly a `-term` pushes results away, relative to the positive prompt (1.0 = as strongly).
NEGATIVE_WEIGHT = 0.7
# Share of the picture in a text-plus-picture query.
IMAGE_WEIGHT = 0.5
_NEGATIVE_TERM = re.compile(r'(?:^|\s)-(?:"([^"]+)"|(\S+))')


class Encoder(Protocol):
    """What the service needs from an encoder (the CLIP encoder or the micro-batching front of it)."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised text vectors."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Normalised picture vectors."""
        ...


@dataclass(frozen=True)
class ImageHit:
    """A picture in a result list."""

    rank: int
    score: float
    id: str
    label: str
    index: int

    def to_json(self) -> dict:
        """The JSON shape of the command line contract."""
        return {"rank": self.rank, "score": round(self.score, 4), "id": self.id, "label": self.label}


@dataclass(frozen=True)
class CaptionHit:
    """A caption in a result list: what CLIP thinks the picture shows."""

    rank: int
    score: float
    text: str

    def to_json(self) -> dict:
        """The JSON shape of the command line contract."""
        return {"rank": self.rank, "score": round(self.score, 4), "text": self.text}


@dataclass(frozen=True)
class ParsedQuery:
    """A prompt split into what to look for and the `-terms` to steer away from."""

    positive: str
    negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextQuery:
    """A checked prompt: the texts to encode, its cache key, and its vector when the cache has it."""

    display: str
    texts: tuple[str, ...]
    key: str
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class FindResult:
    """Pictures for a text (and optionally picture) query, one page of them."""

    query: str
    images: list[ImageHit]
    offset: int = 0
    label: str | None = None
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)
    seconds: float = 0.0

    def to_json(self) -> dict:
        """The JSON shape of the command line contract."""
        return {"query": self.query, "images": [hit.to_json() for hit in self.images]}


@dataclass(frozen=True)
class SimilarResult:
    """Nearest captions and pictures for a picture."""

    captions: list[CaptionHit]
    images: list[ImageHit]
    source: ImageHit | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        """The JSON shape of the command line contract."""
        data = {"captions": [c.to_json() for c in self.captions], "images": [i.to_json() for i in self.images]}
        if self.source is not None:
            data["source"] = self.source.to_json()
        return data


def parse_query(text: str) -> ParsedQuery:
    """Split `a dog -snow -"red car"` into the positive prompt and negative terms."""
    negatives = tuple((quoted or bare).strip() for quoted, bare in _NEGATIVE_TERM.findall(text))
    positive = _NEGATIVE_TERM.sub(" ", text)
    positive = " ".join(positive.split())
    return ParsedQuery(positive=positive, negatives=tuple(n for n in negatives if n))


def check_k(k: int) -> int:
    """A result count within 1..MAX_K, or a clear error."""
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidQueryError(f"The number of results must be between 1 and {MAX_K} (got {k}).")
    return k


class VectorCache:
    """A thread-safe LRU of query vectors, so repeated prompts and "More" skip the encoder."""

    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        """The cached vector, refreshed as most recent, or None."""
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        """Remember a vector, evicting the least recently used beyond capacity."""
        if self.capacity <= 0:
            return
        vector = np.array(vector, dtype=np.float32)
        vector.setflags(write=False)
        with self._lock:
            self._entries[key] = vector
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


class SearchService:
    """Find pictures by words, by pictures or both; every method blocks and belongs in an executor."""

    def __init__(
        self,
        encoder: Encoder,
        store: EmbeddingStore,
        index: VectorIndex | None = None,
        *,
        cache_size: int = 2048,
        negative_weight: float = NEGATIVE_WEIGHT,
        image_weight: float = IMAGE_WEIGHT,
    ) -> None:
        self.encoder = encoder
        self.store = store
        self.index = index or ExactIndex(store)
        self.cache = VectorCache(cache_size)
        self.negative_weight = negative_weight
        self.image_weight = image_weight

    # --- queries -----------------------------------------------------------------------------------------

    def find(
        self,
        text: str,
        k: int = 4,
        *,
        label: str | None = None,
        offset: int = 0,
        image: Image.Image | None = None,
    ) -> FindResult:
        """The `k` pictures best matching `text` (with `-terms`, optionally blended with a picture)."""
        started = time.perf_counter()
        check_k(k)
        if offset < 0:
            raise InvalidQueryError("The page offset cannot be negative.")
        vector = self.text_query_vector(text)
        if image is not None:
            picture = self.encoder.encode_images([image])[0]
            vector = _normalized((1.0 - self.image_weight) * vector + self.image_weight * picture)
        return self.find_by_vector(vector, k, query=" ".join(text.split()), label=label, offset=offset,
                                   started=started)

    def find_by_vector(
        self,
        vector: np.ndarray,
        k: int = 4,
        *,
        query: str = "",
        label: str | None = None,
        offset: int = 0,
        started: float | None = None,
    ) -> FindResult:
        """A page of pictures nearest to a query vector (the "More" button uses this with a cached vector)."""
        started = started if started is not None else time.perf_counter()
        check_k(k)
        code = None if label is None or not label.strip() else self.store.label_code(label)
        hits = self.index.search_images(vector[None, :], k, offset=offset, label=code)[0]
        images = self._image_hits(hits, first_rank=offset + 1)
        seconds = time.perf_counter() - started
        log.debug("find %r k=%d offset=%d label=%s: %.1f ms", query, k, offset, label, seconds * 1e3)
        return FindResult(query=query, images=images, offset=offset,
                          label=None if code is None else self.store.label_names[code], vector=vector,
                          seconds=seconds)

    def similar(self, image: Image.Image, k: int = 4, *, captions: int | None = None) -> SimilarResult:
        """Nearest captions and pictures for an uploaded picture."""
        started = time.perf_counter()
        check_k(k)
        vector = self.encoder.encode_images([image])[0]
        return self.similar_to_vector(vector, k, captions=captions, started=started)

    def similar_to_vector(
        self, vector: np.ndarray, k: int = 4, *, captions: int | None = None, started: float | None = None
    ) -> SimilarResult:
        """Nearest captions and pictures for a picture's vector."""
        check_k(k)
        started = started if started is not None else time.perf_counter()
        return self._similar_to_vector(vector, k, captions or k, started=started)

    def similar_to_item(self, index: int, k: int = 4, *, captions: int | None = None) -> SimilarResult:
        """Nearest captions and other pictures for a picture of the store; no encoding needed."""
        started = time.perf_counter()
        check_k(k)
        item = self.store.item(index)
        vector = np.asarray(self.store.image_vectors[index], dtype=np.float32)
        result = self._similar_to_vector(vector, k, captions or k, exclude=index, started=started)
        source = ImageHit(rank=0, score=1.0, id=item.id, label=item.label, index=index)
        return SimilarResult(captions=result.captions, images=result.images, source=source,
                             seconds=result.seconds)

    def random_item(self, k_captions: int = 3, rng: random.Random | None = None) -> SimilarResult:
        """A random picture of the store with its nearest captions."""
        if len(self.store) == 0:
            raise InvalidQueryError("The collection is empty.")
        index = (rng or random).randrange(len(self.store))
        return self.similar_to_item(index, k=1, captions=k_captions)

    def text_query_vector(self, text: str) -> np.ndarray:
        """The normalised query vector for a prompt with optional `-terms`, cached."""
        query = self.text_query(text)
        if query.vector is not None:
            return query.vector
        return self.text_vector(query, self.encoder.encode_texts(list(query.texts)))

    def text_query(self, text: str) -> TextQuery:
        """Check and parse a prompt, and look its vector up in the cache; no encoding."""
        parsed = self._parse(text)
        key = f"{parsed.positive}\x00{'|'.join(parsed.negatives)}"
        return TextQuery(display=" ".join(text.split()), texts=(parsed.positive, *parsed.negatives), key=key,
                         vector=self.cache.get(key))

    def text_vector(self, query: TextQuery, vectors: np.ndarray) -> np.ndarray:
        """The query vector from the encoded `query.texts`: the prompt steered away from its `-terms`; cached."""
        vector = vectors[0]
        if len(vectors) > 1:
            vector = _normalized(vector - self.negative_weight * vectors[1:].mean(axis=0))
        self.cache.put(query.key, vector)
        return vector

    # --- helpers -----------------------------------------------------------------------------------------

    @staticmethod
    def _parse(text: str) -> ParsedQuery:
        if text is None or not text.strip():
            raise InvalidQueryError("The prompt is empty; describe what you want to see, e.g. `a dog in the snow`.")
        if len(text) > MAX_PROMPT_CHARS:
            raise InvalidQueryError(f"The prompt is longer than {MAX_PROMPT_CHARS} characters.")
        parsed = parse_query(text)
        if not parsed.positive:
            raise InvalidQueryError("The prompt has only `-terms`; add something to search for, e.g. `a dog -snow`.")
        return parsed

    def _similar_to_vector(
        self, vector: np.ndarray, k: int, captions_k: int, *, exclude: int | None = None, started: float
    ) -> SimilarResult:
        extra = 1 if exclude is not None else 0
        image_hits = self.index.search_images(vector[None, :], k + extra)[0]
        if exclude is not None:
            image_hits = [hit for hit in image_hits if hit.index != exclude][:k]
        caption_hits = self.index.search_captions(vector[None, :], min(captions_k, MAX_K))[0]
        captions = [
            CaptionHit(rank=rank, score=hit.score, text=self.store.captions[hit.index].text)
            for rank, hit in enumerate(caption_hits, start=1)
        ]
        seconds = time.perf_counter() - started
        log.debug("similar k=%d: %.1f ms", k, seconds * 1e3)
        return SimilarResult(captions=captions, images=self._image_hits(image_hits), seconds=seconds)

    def _image_hits(self, hits: list[Hit], first_rank: int = 1) -> list[ImageHit]:
        results = []
        for rank, hit in enumerate(hits, start=first_rank):
            item = self.store.item(hit.index)
            results.append(ImageHit(rank=rank, score=hit.score, id=item.id, label=item.label, index=hit.index))
        return results


def _normalized(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)
