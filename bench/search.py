"""Exact search latency at 13k, 100k and 1M vectors, one query and a batch of 32, vs score-all-and-sort."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bot.index import top_k
from bot.store import EmbeddingStore

from .baseline import full_top_k
from .common import Context, Row, percentile, synthetic_store, timed_ms, unit_vectors

log = logging.getLogger(__name__)

K = 10
BATCH = 32


def matrix_for(ctx: Context, count: int, model_dir: Path) -> np.ndarray:
    """The store's memory-mapped matrix for big sizes (the real path), an in-memory one for the rest."""
    if count >= 1_000_000:
        return EmbeddingStore.load(synthetic_store(ctx.out, count, model_dir), verify="quick").image_vectors
    return unit_vectors(count, seed=count)


def _each(matrix: np.ndarray, queries: np.ndarray) -> list:
    return [full_top_k(matrix, query, K) for query in queries]


def run(ctx: Context, model_dir: Path, sizes: list[int], repeats: int) -> None:
    """Median latency of clipbot's top_k and the tutorials' full argsort, single queries and batches."""
    queries = unit_vectors(BATCH * repeats + BATCH, seed=99)
    for count in sizes:
        matrix = matrix_for(ctx, count, model_dir)
        in_memory = np.asarray(matrix)
        top_k(matrix, queries[:1], K)  # pages a mapped matrix in: both sides then read from memory
        full_top_k(in_memory, queries[0], K)
        singles_base, singles_ours = [], []
        for query in queries[:repeats]:
            singles_base.append(timed_ms(full_top_k, in_memory, query, K))
            singles_ours.append(timed_ms(top_k, matrix, query[None], K))
        batch_base, batch_ours = [], []
        for start in range(0, min(repeats, 5) * BATCH, BATCH):
            block = queries[start : start + BATCH]
            batch_base.append(timed_ms(_each, in_memory, block))
            batch_ours.append(timed_ms(top_k, matrix, block, K))
        name = f"{count:,} vectors"
        ctx.add(
            Row(
                "search",
                f"exact top-{K}, 1 query, {name}",
                percentile(singles_base, 50),
                percentile(singles_ours, 50),
                "ms",
            )
        )
        ctx.add(
            Row(
                "search",
                f"exact top-{K}, batch of {BATCH}, {name}",
                percentile(batch_base, 50),
                percentile(batch_ours, 50),
                "ms",
            )
        )
        if count == 100_000:
            half = in_memory.astype(np.float16)
            fp16 = [timed_ms(np.matmul, half, queries[0].astype(np.float16)) for _ in range(3)]
            ctx.add(
                Row(
                    "search",
                    f"never multiply in float16: numpy fp16 matvec, {name}",
                    percentile(singles_base, 50),
                    percentile(fp16, 50),
                    "ms",
                    note="no BLAS for float16 in numpy",
                )
            )
