"""The Milvus back end: a store's vectors exported to Milvus (a server, a cluster or a Milvus Lite file), searched there."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, InvalidQueryError, StoreError
from .index import Hit
from .store import CAPTION_VECTORS, IMAGE_VECTORS, ITEM_IDS, ITEM_LABELS, EmbeddingStore, Manifest

log = logging.getLogger(__name__)

# Milvus Lite database used when CLIPBOT_MILVUS_URI is unset: inside the store directory, so the export
# travels with the store and a rebuild (which replaces the directory) never leaves a stale export behind.
LITE_FILE = "milvus.db"
INDEX_TYPES = ("flat", "hnsw", "ivf_flat")
COLLECTION_PREFIX = "clipbot"
EXPORT_VERSION = "1"
# Field names; the primary key is the store row, so a hit maps straight back to the local store.
PRIMARY, VECTOR, LABEL, ITEM_ID, KIND = "index", "vector", "label", "item_id", "kind"
# Inner product on unit vectors is cosine similarity, the score ExactIndex returns.
METRIC = "IP"
# Milvus refuses a search whose offset + limit exceed 16384 (its `quotaAndLimits` topK cap).
MAX_TOPK = 16_384
# Extra candidates fetched past a page so equal scores at its edge are cut by row, as ExactIndex cuts them.
TIE_SLACK = 16
# Rows per insert: 4096 x 512 float32 is 8 MiB, far below Milvus' 64 MiB default gRPC message cap.
INSERT_BATCH = 4096
# HNSW graph degree and build beam: Milvus' documented defaults range (M 4-64, efConstruction 8-512).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
# HNSW search beam; raised to the request's limit when that is larger, as Milvus requires ef >= limit.
HNSW_EF = 64
# IVF lists probed per query, as a share of all lists: about 1/16 keeps recall@10 high on clustered data.
IVF_PROBE_SHARE = 16
IVF_MIN_ROWS_PER_LIST = 39  # faiss' k-means minimum of training points per centroid
MAX_ID_BYTES = 65_535  # Milvus VARCHAR max_length limit

_DIGEST_FILES = (IMAGE_VECTORS, CAPTION_VECTORS, ITEM_IDS, ITEM_LABELS)
_SERVER_SCHEMES = ("http://", "https://", "tcp://", "unix:")
_P_DIGEST = "clipbot.store_digest"
_P_MODEL = "clipbot.model_fingerprint"
_P_DIM = "clipbot.dim"
_P_ROWS = "clipbot.rows"
_P_KIND = "clipbot.kind"
_P_INDEX = "clipbot.index"
_P_SEARCH = "clipbot.search_params"
_P_VERSION = "clipbot.export_version"
_P_COMPLETE = "clipbot.complete"
_USERINFO = re.compile(r"(?<=://)[^/@]+@")


@dataclass(frozen=True)
class CollectionNames:
    """The two collections that hold one store: its pictures and its captions."""

    images: str
    captions: str


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote, for the command line to print."""

    uri: str
    collections: CollectionNames
    images: int
    captions: int
    index: str
    seconds: float


def default_uri(store_path: str | Path) -> str:
    """The Milvus Lite file used when no URI is configured: `<store>/milvus.db`."""
    return str(Path(store_path) / LITE_FILE)


def is_lite(uri: str) -> bool:
    """Whether a URI names a local Milvus Lite file rather than a server."""
    return not uri.startswith(_SERVER_SCHEMES)


def redact(uri: str) -> str:
    """The URI with any `user:password@` removed, safe to log and print."""
    return _USERINFO.sub("***@", uri)


def store_digest(manifest: Manifest) -> str:
    """Hex sha256 of what search results depend on: the model and the vector, id and label files."""
    try:
        files = {name: manifest.files[name]["sha256"] for name in _DIGEST_FILES}
    except KeyError as error:
        raise StoreError(f"The store's manifest lists no checksum for {error.args[0]}; rebuild the store.") from None
    identity = {"model": manifest.model_fingerprint, "dim": manifest.dim, "files": files}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def collection_names(manifest: Manifest) -> CollectionNames:
    """Collection names derived from the store's content, so stores sharing one Milvus never collide."""
    stem = f"{COLLECTION_PREFIX}_{store_digest(manifest)[:16]}"
    return CollectionNames(images=f"{stem}_images", captions=f"{stem}_captions")


# --- connections -----------------------------------------------------------------------------------------

# Milvus Lite runs a server inside this process, one per file; it is stopped when its last user closes, which
# also frees the file's lock for other processes (Milvus Lite allows one process per file).
_lite_lock = threading.Lock()
_lite_users: dict[str, int] = {}


class MilvusConnection:
    """A pymilvus client for a server URI or a Milvus Lite file, with errors in clipbot's words."""

    def __init__(self, uri: str, token: str | None = None, *, create: bool = False) -> None:
        """Connect; a missing Lite file is an error unless `create`. Blocking."""
        _require("pymilvus")
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        self.uri = uri
        self.lite_path: str | None = None
        if is_lite(uri):
            _require("milvus_lite")
            path = Path(uri).expanduser()
            if path.suffix != ".db":
                raise ConfigError(
                    f"CLIPBOT_MILVUS_URI {uri!r} is neither a server (http://host:19530, https://…) "
                    "nor a Milvus Lite file ending in .db."
                )
            if not create and not path.exists():
                raise StoreError(
                    f"There is no Milvus Lite database at {path}; run `clipbot export-milvus` for this store first."
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            self.lite_path = str(path.resolve())
            uri = self.lite_path
            _acquire_lite(self.lite_path)
        try:
            self.client = MilvusClient(uri=uri, token=token or "")
        except MilvusException as error:
            if self.lite_path is not None:
                _release_lite(self.lite_path)
                raise ConfigError(
                    f"Cannot open the Milvus Lite database {self.lite_path}: another process may hold it "
                    "(Milvus Lite allows one process per file); stop it, or point CLIPBOT_MILVUS_URI at a Milvus server."
                ) from error
            raise ConfigError(
                f"Cannot reach Milvus at {redact(self.uri)} ({error.message}); check CLIPBOT_MILVUS_URI and "
                "CLIPBOT_MILVUS_TOKEN."
            ) from error
        log.debug("connected to Milvus at %s", redact(self.uri))

    def close(self) -> None:
        """Close the client, and stop the in-process Lite server once nothing else uses it."""
        if self.client is None:
            return
        client, self.client = self.client, None
        try:
            client.close()
        finally:
            if self.lite_path is not None:
                _release_lite(self.lite_path)

    def __enter__(self) -> MilvusConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def properties(self, name: str) -> dict[str, str] | None:
        """A collection's properties, or None when it does not exist. Blocking."""
        if not self.client.has_collection(name):
            return None
        return dict(self.client.describe_collection(name).get("properties") or {})

    def count(self, name: str) -> int:
        """Rows in a loaded collection, deletions accounted for. Blocking."""
        rows = self.client.query(name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def clipbot_collections(self) -> list[str]:
        """Every collection on the server that a clipbot export made. Blocking."""
        return sorted(name for name in self.client.list_collections() if name.startswith(f"{COLLECTION_PREFIX}_"))


def _require(module: str) -> None:
    """Import check with the install line, since the Milvus packages are an optional extra."""
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(
            f"The Milvus back end needs {module.replace('_', '-')}; install it with `pip install 'clipbot[milvus]'`."
        ) from None


def _acquire_lite(path: str) -> None:
    with _lite_lock:
        _lite_users[path] = _lite_users.get(path, 0) + 1


def _release_lite(path: str) -> None:
    with _lite_lock:
        users = _lite_users.get(path, 0) - 1
        if users > 0:
            _lite_users[path] = users
            return
        _lite_users.pop(path, None)
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(path)
    log.debug("stopped the Milvus Lite server for %s", path)


# --- export ----------------------------------------------------------------------------------------------


def index_settings(index: str, rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build and search parameters of an index type for a collection of `rows` vectors."""
    if index == "flat":
        return {}, {}
    if index == "hnsw":
        return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}, {"ef": HNSW_EF}
    if index == "ivf_flat":
        # sqrt(rows) lists: the low end of the usual 1-16 x sqrt(rows), because k-means training grows with the
        # list count (4 x sqrt at 1M rows takes Milvus Lite most of an hour on 2 cores); k-means also wants
        # 39 training rows per list (faiss warns below that).
        nlist = max(1, min(65_536, rows // IVF_MIN_ROWS_PER_LIST, round(math.sqrt(max(rows, 1)))))
        return {"nlist": nlist}, {"nprobe": max(1, min(nlist, max(8, nlist // IVF_PROBE_SHARE)))}
    raise ConfigError(f"Unknown Milvus index {index!r}; choose one of {', '.join(INDEX_TYPES)}.")


def export_store(
    store: EmbeddingStore,
    uri: str | None = None,
    token: str | None = None,
    *,
    index: str = "flat",
    drop: bool = False,
    batch_size: int = INSERT_BATCH,
    progress: bool = True,
) -> ExportReport:
    """Copy a store's picture and caption vectors (with row, id and label) into Milvus. Blocking: minutes."""
    started = time.perf_counter()
    index_settings(index, 0)  # reject an unknown index before touching the server
    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1.")
    uri = uri or default_uri(store.path)
    names = collection_names(store.manifest)
    with MilvusConnection(uri, token, create=True) as connection:
        client = connection.client
        for name in (names.images, names.captions):
            if client.has_collection(name):
                if not drop:
                    raise StoreError(
                        f"Milvus at {redact(uri)} already holds {name} for this store; "
                        f"pass --drop to replace it (`clipbot export-milvus --store {store.path} --drop`)."
                    )
                log.info("dropping %s", name)
                client.drop_collection(name)
        digest = store_digest(store.manifest)
        ids = np.asarray(store.ids)
        id_bytes = max((len(str(value).encode()) for value in ids), default=1)
        if id_bytes > MAX_ID_BYTES:
            raise StoreError(f"An item id of this store is {id_bytes} bytes, more than Milvus allows ({MAX_ID_BYTES}).")
        image_fields = {LABEL: ("int32", None), ITEM_ID: ("varchar", max(64, id_bytes))}
        caption_fields = {KIND: ("varchar", 64)}
        kinds = [caption.kind for caption in store.captions]
        jobs = (
            (names.images, "images", store.image_vectors, image_fields,
             lambda rows: {LABEL: store.labels[rows].tolist(), ITEM_ID: [str(v) for v in ids[rows]]}),
            (names.captions, "captions", store.caption_vectors, caption_fields,
             lambda rows: {KIND: [kinds[i] for i in range(rows.start, rows.stop)]}),
        )
        for name, kind, vectors, fields, metadata in jobs:
            _, search = index_settings(index, len(vectors))
            properties = {
                _P_DIGEST: digest, _P_MODEL: store.manifest.model_fingerprint, _P_DIM: str(store.dim),
                _P_ROWS: str(len(vectors)), _P_KIND: kind, _P_INDEX: index, _P_SEARCH: json.dumps(search),
                _P_VERSION: EXPORT_VERSION, _P_COMPLETE: "0",
            }
            _create_collection(client, name, store.dim, fields, properties)
            _insert(client, name, vectors, metadata, batch_size, progress, f"{kind} -> milvus")
            client.flush(name)
            _create_indexes(client, name, index, len(vectors), with_label=kind == "images",
                            wait=connection.lite_path is None)
            client.load_collection(name)
            # Marked complete only now: connect() refuses a collection whose export was interrupted.
            client.alter_collection_properties(name, properties={_P_COMPLETE: "1"})
            log.info("exported %d %s to %s (%s index)", len(vectors), kind, name, index)
    seconds = time.perf_counter() - started
    return ExportReport(uri=redact(uri), collections=names, images=len(store), captions=len(store.captions),
                        index=index, seconds=seconds)


def _create_collection(client, name: str, dim: int, fields: dict, properties: dict[str, str]) -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(PRIMARY, DataType.INT64, is_primary=True)
    schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=dim)
    for field, (kind, length) in fields.items():
        if kind == "int32":
            schema.add_field(field, DataType.INT32)
        else:
            schema.add_field(field, DataType.VARCHAR, max_length=length)
    client.create_collection(name, schema=schema, properties=properties)


def _insert(client, name: str, vectors: np.ndarray, metadata, batch_size: int, progress: bool, desc: str) -> None:
    from tqdm.auto import tqdm

    total = int(vectors.shape[0])
    with tqdm(total=total, unit="vec", desc=desc, disable=not progress, smoothing=0.1) as bar:
        for rows in _batches(total, batch_size):
            block = np.ascontiguousarray(vectors[rows], dtype=np.float32)
            columns = metadata(rows)
            entities = [
                {PRIMARY: rows.start + i, VECTOR: block[i], **{key: values[i] for key, values in columns.items()}}
                for i in range(len(block))
            ]
            client.insert(name, entities)
            bar.update(len(block))


def _batches(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


def create_vector_index(client, collection: str, index: str, rows: int, *, wait: bool) -> None:
    """Build the vector index of a collection of `rows` vectors, surviving pymilvus' retry of a slow build. Blocking."""
    build, _ = index_settings(index, rows)
    _ensure_index(client, collection, VECTOR, index.upper(), build, wait=wait)


def _create_indexes(client, name: str, index: str, rows: int, *, with_label: bool, wait: bool) -> None:
    create_vector_index(client, name, index, rows, wait=wait)
    if with_label:
        # An inverted index keeps `label == code` filters cheap on a large collection.
        _ensure_index(client, name, LABEL, "INVERTED", {}, wait=wait)


def _ensure_index(client, collection: str, field: str, kind: str, params: dict, *, wait: bool) -> None:
    from pymilvus.exceptions import MilvusException

    spec = client.prepare_index_params()
    if field == VECTOR:
        spec.add_index(field_name=field, index_type=kind, metric_type=METRIC, params=params)
    else:
        spec.add_index(field_name=field, index_type=kind)
    try:
        # A server builds indexes in the background, so wait for them; Milvus Lite builds them within the call,
        # and pymilvus' wait would poll it with an RPC Lite does not implement (an error log, 0.5 s per index).
        client.create_index(collection, spec, sync=wait)
    except MilvusException as error:
        # A build that outlasts the gRPC keep-alive (HNSW over a million rows in Milvus Lite: 10-15 min) is
        # retried by pymilvus, and the retry reports "index already exists" once the first call finished.
        if field not in client.list_indexes(collection, field_name=field):
            raise
        built = client.describe_index(collection, index_name=field).get("index_type")
        if str(built).upper() != kind:
            raise
        log.warning("Milvus reported %r building the %s index of %s, but the index is there", error.message, kind,
                    collection)


# --- search ----------------------------------------------------------------------------------------------


class MilvusIndex:
    """Nearest-neighbour search in a store's Milvus collections; hits are rows of the local store."""

    name = "milvus"

    def __init__(
        self,
        connection: MilvusConnection,
        collections: CollectionNames,
        *,
        image_count: int,
        caption_count: int,
        index: str,
        image_search: dict[str, Any],
        caption_search: dict[str, Any],
    ) -> None:
        self.connection = connection
        self.collections = collections
        self.image_count = image_count
        self.caption_count = caption_count
        self.index_type = index
        self._image_search = image_search
        self._caption_search = caption_search

    @classmethod
    def connect(cls, store: EmbeddingStore, uri: str | None = None, token: str | None = None) -> MilvusIndex:
        """Open the store's collections after checking they hold exactly this store. Blocking."""
        uri = uri or default_uri(store.path)
        if is_lite(uri) and uri.endswith(".db") and not Path(uri).expanduser().exists():
            raise StoreError(
                f"There is no Milvus Lite database at {uri}; run `clipbot export-milvus --store {store.path}` first."
            )
        connection = MilvusConnection(uri, token)
        try:
            names = collection_names(store.manifest)
            digest = store_digest(store.manifest)
            expected = {names.images: len(store), names.captions: len(store.captions)}
            found: dict[str, dict[str, str]] = {}
            for name, rows in expected.items():
                found[name] = _check_collection(connection, store, name, digest, rows)
            image_props, caption_props = found[names.images], found[names.captions]
            index = cls(
                connection, names, image_count=len(store), caption_count=len(store.captions),
                index=image_props.get(_P_INDEX, "flat"),
                image_search=json.loads(image_props.get(_P_SEARCH) or "{}"),
                caption_search=json.loads(caption_props.get(_P_SEARCH) or "{}"),
            )
        except BaseException:
            connection.close()
            raise
        log.info("Milvus back end: %s at %s (%d images, %s index)", names.images, redact(uri), len(store),
                 index.index_type)
        return index

    def search_images(
        self, queries: np.ndarray, k: int, *, offset: int = 0, label: int | None = None
    ) -> list[list[Hit]]:
        """For each query row, hits `offset`..`offset+k` among the images (of one label, if given). Blocking."""
        expression = "" if label is None else f"{LABEL} == {int(label)}"
        return self._search(self.collections.images, self.image_count, self._image_search, queries, k, offset,
                            expression)

    def search_captions(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """For each query row, the `k` nearest captions. Blocking."""
        return self._search(self.collections.captions, self.caption_count, self._caption_search, queries, k, 0, "")

    def describe(self) -> dict[str, Any]:
        """Where the collections live and what they hold, for `clipbot milvus-info`."""
        return {
            "uri": redact(self.connection.uri),
            "lite": self.connection.lite_path is not None,
            "images_collection": self.collections.images,
            "captions_collection": self.collections.captions,
            "images": self.image_count,
            "captions": self.caption_count,
            "index": self.index_type,
            "search_params": self._image_search,
        }

    def close(self) -> None:
        """Close the connection (and a Milvus Lite server this process no longer needs)."""
        self.connection.close()

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _search(
        self, collection: str, rows: int, base: dict[str, Any], queries: np.ndarray, k: int, offset: int,
        expression: str,
    ) -> list[list[Hit]]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        need = offset + k
        if need <= 0 or rows == 0 or len(queries) == 0:
            return [[] for _ in queries]
        if need > MAX_TOPK:
            raise InvalidQueryError(f"The Milvus back end pages at most {MAX_TOPK} results deep (asked for {need}).")
        # Fetch from the top rather than use Milvus' own offset, so a page edge never splits a tie differently
        # from one request to the next; the slack lets equal scores be ordered by row as ExactIndex orders them.
        limit = min(need + TIE_SLACK, MAX_TOPK, rows)
        params = dict(base)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), limit)
        started = time.perf_counter()
        results = self.connection.client.search(
            collection, data=queries, limit=limit, filter=expression, output_fields=[PRIMARY],
            search_params={"metric_type": METRIC, "params": params},
        )
        log.debug("milvus top-%d of %s x %d queries in %.2f ms", limit, collection, len(queries),
                  (time.perf_counter() - started) * 1e3)
        return [_page(hits, offset, need) for hits in results]


def _page(hits, offset: int, need: int) -> list[Hit]:
    ranked = sorted(((float(hit["distance"]), int(hit[PRIMARY])) for hit in hits), key=lambda pair: (-pair[0], pair[1]))
    return [Hit(index=row, score=score) for score, row in ranked[offset:need]]


def _check_collection(
    connection: MilvusConnection, store: EmbeddingStore, name: str, digest: str, rows: int
) -> dict[str, str]:
    """The collection's properties once it is known to hold this store's `rows` vectors, else a StoreError."""
    where = redact(connection.uri)
    fix = f"run `clipbot export-milvus --store {store.path}` first"
    properties = connection.properties(name)
    if properties is None:
        others = [other for other in connection.clipbot_collections() if not other.startswith(name.rsplit("_", 1)[0])]
        hint = f" (it holds {', '.join(others[:4])}, exported from another store or build)" if others else ""
        raise StoreError(f"Milvus at {where} has no collection {name} for store {store.path}{hint}; {fix}.")
    if properties.get(_P_DIGEST) != digest or properties.get(_P_MODEL) != store.manifest.model_fingerprint:
        raise StoreError(
            f"Milvus collection {name} at {where} was exported from another store or build; "
            f"run `clipbot export-milvus --store {store.path} --drop` first."
        )
    if properties.get(_P_COMPLETE) != "1":
        raise StoreError(
            f"The export of {name} to {where} did not finish; run `clipbot export-milvus --store {store.path} --drop`."
        )
    connection.client.load_collection(name)
    count = connection.count(name)
    if count != rows:
        raise StoreError(
            f"Milvus collection {name} at {where} holds {count} vectors but the store has {rows}; "
            f"run `clipbot export-milvus --store {store.path} --drop` first."
        )
    return properties
