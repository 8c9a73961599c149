"""Vector search back ends behind one interface; the exact in-process index is the default."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .store import EmbeddingStore

log = logging.getLogger(__name__)

# Rows scored per block: bounds the score matrix to block x queries floats whatever the store size.
BLOCK_ROWS = 262_144
# Up to this many rows a single query is scored without BLAS threads (see _scores).
EINSUM_ROWS = 32_768


@dataclass(frozen=True)
class Hit:
    """One search result: a row of the searched matrix and its cosine similarity."""

    index: int
    score: float


class VectorIndex(Protocol):
    """Nearest-neighbour search over a store's image and caption vectors."""

    name: str

    def search_images(
        self, queries: np.ndarray, k: int, *, offset: int = 0, label: int | None = None
    ) -> list[list[Hit]]:
        """For each query row, hits `offset`..`offset+k` among the images (of one label, if given). Blocking."""
        ...

    def search_captions(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """For each query row, the `k` nearest captions. Blocking."""
        ...


def top_k(
    matrix: np.ndarray, queries: np.ndarray, k: int, *, offset: int = 0, allowed: np.ndarray | None = None
) -> list[list[Hit]]:
    """Exact top-k by inner product, best first; equal scores are ordered by row so results are deterministic.

    `allowed` is an optional boolean mask over rows.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    need = offset + k
    rows = matrix.shape[0]
    if need <= 0 or rows == 0:
        return [[] for _ in queries]
    started = time.perf_counter()
    candidate_scores: list[list[np.ndarray]] = [[] for _ in queries]
    candidate_rows: list[list[np.ndarray]] = [[] for _ in queries]
    for start in range(0, rows, BLOCK_ROWS):
        block = np.asarray(matrix[start : start + BLOCK_ROWS])
        scores = _scores(block, queries)
        if allowed is not None:
            scores[:, ~allowed[start : start + BLOCK_ROWS]] = -np.inf
        for q, row_scores in enumerate(scores):
            picked = _best_rows(row_scores, need)
            candidate_scores[q].append(row_scores[picked])
            candidate_rows[q].append(picked + start)
    results = []
    for q in range(len(queries)):
        scores = np.concatenate(candidate_scores[q])
        indices = np.concatenate(candidate_rows[q])
        order = np.lexsort((indices, -scores))[offset:need]
        results.append(
            [Hit(int(indices[i]), float(scores[i])) for i in order if np.isfinite(scores[i])]
        )
    log.debug("exact top-%d over %d rows x %d queries in %.2f ms", need, rows, len(queries),
              (time.perf_counter() - started) * 1e3)
    return results


def _scores(block: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(queries, rows) inner products; one query against a small block uses einsum's single-threaded loop.

    A single query is a matrix-vector product bound by memory bandwidth. Under load, OpenBLAS's spinning
    threads fight torch's for the cores and a 13k-row product took ~10 ms instead of ~1 on a 2-core machine
    (docs/BENCHMARKS.md); einsum never threads. Past EINSUM_ROWS a second BLAS thread's bandwidth is worth
    more than that fixed cost, and batches are compute-bound: both keep BLAS.
    """
    if len(queries) == 1:
        if block.shape[0] <= EINSUM_ROWS:
            return np.einsum("ij,j->i", block, queries[0])[None, :]
        return (block @ queries[0])[None, :]
    return queries @ block.T


def _best_rows(scores: np.ndarray, need: int) -> np.ndarray:
    """Rows holding the `need` best scores, plus any tied with the worst of them."""
    if need >= scores.shape[0]:
        return np.arange(scores.shape[0])
    kth = np.partition(scores, -need)[-need]
    return np.flatnonzero(scores >= kth)


class ExactIndex:
    """Brute-force cosine search over the store's memory-mapped float32 matrices."""

    name = "exact"

    def __init__(self, store: EmbeddingStore) -> None:
        self.store = store
        self._label_masks: dict[int, np.ndarray] = {}

    def search_images(
        self, queries: np.ndarray, k: int, *, offset: int = 0, label: int | None = None
    ) -> list[list[Hit]]:
        """Exact nearest images. Blocking."""
        allowed = None if label is None else self._label_mask(label)
        return top_k(self.store.image_vectors, queries, k, offset=offset, allowed=allowed)

    def search_captions(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Exact nearest captions. Blocking."""
        return top_k(self.store.caption_vectors, queries, k)

    def _label_mask(self, label: int) -> np.ndarray:
        mask = self._label_masks.get(label)
        if mask is None:
            mask = np.asarray(self.store.labels) == label
            self._label_masks[label] = mask
        return mask
