"""Assembles encoder, store, index and service from settings: shared by the command line and the bot."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .encoder import ClipEncoder
from .index import ExactIndex, VectorIndex
from .search import SearchService
from .store import EmbeddingStore, read_manifest

log = logging.getLogger(__name__)


@dataclass
class Engine:
    """A loaded encoder, store and the service over them."""

    encoder: ClipEncoder
    store: EmbeddingStore
    index: VectorIndex
    service: SearchService
    load_seconds: float


def load_engine(
    store_path: str | Path,
    *,
    model: str | None = None,
    device: str | None = None,
    precision: str = "auto",
    verify: str = "full",
    backend: str = "exact",
    milvus_uri: str | None = None,
    milvus_token: str | None = None,
) -> Engine:
    """Load everything a search needs; the model defaults to the one the store was built with. Blocking."""
    started = time.perf_counter()
    manifest = read_manifest(Path(store_path))
    encoder = ClipEncoder.load(model or manifest.model_id, device=device, precision=precision)
    info = encoder.info
    store = EmbeddingStore.load(store_path, expect_fingerprint=info.fingerprint, expect_dim=info.dim, verify=verify)
    index = open_index(store, backend, milvus_uri=milvus_uri, milvus_token=milvus_token)
    service = SearchService(encoder, store, index)
    seconds = time.perf_counter() - started
    log.info("engine ready in %.1f s (%s back end)", seconds, index.name)
    return Engine(encoder=encoder, store=store, index=index, service=service, load_seconds=seconds)


def open_index(
    store: EmbeddingStore, backend: str, *, milvus_uri: str | None = None, milvus_token: str | None = None
) -> VectorIndex:
    """The configured search back end over a loaded store."""
    if backend == "exact":
        return ExactIndex(store)
    if backend == "milvus":
        from .milvus import MilvusIndex

        return MilvusIndex.connect(store, uri=milvus_uri, token=milvus_token)
    raise ValueError(f"unknown back end {backend!r}")
