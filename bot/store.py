"""The on-disk embedding store: one directory, written atomically, loaded by memory-mapping and validated."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import ModelMismatchError, StoreError, UnknownItemError
from .prompts import readable_label

log = logging.getLogger(__name__)

FORMAT_NAME = "clipbot-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMAGE_VECTORS = "images.npy"
CAPTION_VECTORS = "captions.npy"
ITEM_IDS = "ids.npy"
ITEM_LABELS = "labels.npy"
ITEM_ROWS = "rows.npy"
CAPTIONS = "captions.json"
THUMBS = "thumbs.bin"
THUMB_INDEX = "thumbs_index.npy"
DATA_FILES = (IMAGE_VECTORS, CAPTION_VECTORS, ITEM_IDS, ITEM_LABELS, ITEM_ROWS, CAPTIONS, THUMBS, THUMB_INDEX)
# Vectors are stored normalised; float32 rounding leaves norms within about 1e-6 of one.
NORM_TOLERANCE = 1e-3
_HASH_CHUNK = 16 * 1024 * 1024


@dataclass(frozen=True)
class Item:
    """One picture of the store."""

    index: int
    id: str
    label: str
    caption: str
    split: str
    row: int


@dataclass(frozen=True)
class Caption:
    """One caption the store can answer with: its text and where it came from (class, imagenet, file)."""

    text: str
    kind: str = "class"


@dataclass
class Manifest:
    """What a store holds and how it was made; `files` maps each data file to its size and sha256."""

    model_id: str
    model_fingerprint: str
    dim: int
    dataset: dict
    image_count: int
    caption_count: int
    label_names: list[str]
    splits: list[str]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    files: dict[str, dict] = field(default_factory=dict)
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """The manifest as indented JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest, refusing unknown formats and versions."""
        data = json.loads(text)
        if data.get("format") != FORMAT_NAME:
            raise StoreError(f"not a clipbot store (format {data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise StoreError(
                f"store format version {data.get('version')} is not supported by this clipbot "
                f"(expects {FORMAT_VERSION}); rebuild it with `clipbot build`"
            )
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fail(path: Path, problem: str) -> StoreError:
    return StoreError(f"Store {path} is unusable: {problem}.")


class EmbeddingStore:
    """A loaded store: memory-mapped vectors, item metadata, captions and thumbnails."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self.image_vectors: np.ndarray = np.load(path / IMAGE_VECTORS, mmap_mode="r")
        self.caption_vectors: np.ndarray = np.load(path / CAPTION_VECTORS, mmap_mode="r")
        self.ids: np.ndarray = np.load(path / ITEM_IDS, mmap_mode="r")
        self.labels: np.ndarray = np.load(path / ITEM_LABELS, mmap_mode="r")
        self.rows: np.ndarray = np.load(path / ITEM_ROWS, mmap_mode="r")
        self.thumb_index: np.ndarray = np.load(path / THUMB_INDEX, mmap_mode="r")
        self._thumbs = np.memmap(path / THUMBS, dtype=np.uint8, mode="r") if (path / THUMBS).stat().st_size else None
        raw_captions = json.loads((path / CAPTIONS).read_text(encoding="utf-8"))
        self.captions: list[Caption] = [Caption(**entry) for entry in raw_captions]
        self.label_names: list[str] = list(manifest.label_names)
        self._id_lookup: dict[str, int] | None = None

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        expect_fingerprint: str | None = None,
        expect_dim: int | None = None,
        verify: str = "full",
    ) -> EmbeddingStore:
        """Open and validate a store; `verify` is "full" (checksums and every norm) or "quick" (sizes, sampled norms)."""
        started = time.perf_counter()
        path = Path(path)
        manifest = read_manifest(path)
        if expect_dim is not None and manifest.dim != expect_dim:
            raise ModelMismatchError(
                f"Store {path} holds {manifest.dim}-dimensional vectors but the model makes {expect_dim}-dimensional "
                f"ones; load the model it was built with ({manifest.model_id}) or rebuild the store."
            )
        if expect_fingerprint is not None and manifest.model_fingerprint != expect_fingerprint:
            raise ModelMismatchError(
                f"Store {path} was built with another model ({manifest.model_id}, fingerprint "
                f"{manifest.model_fingerprint}); set CLIPBOT_MODEL to that model or rebuild the store with this one."
            )
        _check_files(path, manifest, checksums=verify == "full")
        try:
            store = cls(path, manifest)
        except (OSError, ValueError, TypeError, json.JSONDecodeError) as error:
            raise _fail(path, f"a data file cannot be read ({error})") from error
        store._validate(sample_norms=verify != "full")
        log.info(
            "loaded store %s: %d images, %d captions, dim %d, built %s (%.0f ms)",
            path, len(store), len(store.captions), manifest.dim, manifest.created,
            (time.perf_counter() - started) * 1e3,
        )
        return store

    def __len__(self) -> int:
        return int(self.image_vectors.shape[0])

    @property
    def dim(self) -> int:
        """Length of each vector."""
        return self.manifest.dim

    def _validate(self, *, sample_norms: bool) -> None:
        m, path = self.manifest, self.path
        n, c = m.image_count, m.caption_count
        expected = {
            IMAGE_VECTORS: (self.image_vectors, (n, m.dim), np.float32),
            CAPTION_VECTORS: (self.caption_vectors, (c, m.dim), np.float32),
            ITEM_LABELS: (self.labels, (n,), np.int32),
            ITEM_ROWS: (self.rows, (n,), np.int64),
            THUMB_INDEX: (self.thumb_index, (n, 2), np.int64),
        }
        for name, (array, shape, dtype) in expected.items():
            if array.shape != shape:
                raise _fail(path, f"{name} has shape {array.shape}, the manifest says {shape}")
            if array.dtype != dtype:
                raise _fail(path, f"{name} is {array.dtype}, expected {np.dtype(dtype).name}")
        if self.ids.shape != (n,):
            raise _fail(path, f"{ITEM_IDS} has {self.ids.shape[0]} ids for {n} images")
        if len(self.captions) != c:
            raise _fail(path, f"{CAPTIONS} lists {len(self.captions)} captions, the manifest says {c}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.label_names)):
            raise _fail(path, "an item's label is outside the manifest's label names")
        thumbs_size = 0 if self._thumbs is None else len(self._thumbs)
        if n and int((self.thumb_index[:, 0] + self.thumb_index[:, 1]).max()) > thumbs_size:
            raise _fail(path, f"{THUMB_INDEX} points past the end of {THUMBS}")
        for name, vectors in ((IMAGE_VECTORS, self.image_vectors), (CAPTION_VECTORS, self.caption_vectors)):
            bad = _unnormalised_row(vectors, sample=sample_norms)
            if bad is not None:
                raise _fail(path, f"row {bad} of {name} is not unit length (vectors must be L2-normalised)")

    def item(self, index: int) -> Item:
        """Metadata of the picture at `index`."""
        if not 0 <= index < len(self):
            raise UnknownItemError(f"There is no picture #{index} in this collection.")
        label = self.label_names[int(self.labels[index])]
        return Item(
            index=index,
            id=str(self.ids[index]),
            label=label,
            caption=readable_label(label),
            split=_split_of(str(self.ids[index])),
            row=int(self.rows[index]),
        )

    def index_of(self, item_id: str) -> int:
        """Position of the picture with this id."""
        if self._id_lookup is None:
            self._id_lookup = {str(value): i for i, value in enumerate(self.ids)}
        try:
            return self._id_lookup[item_id]
        except KeyError:
            raise UnknownItemError(f"There is no picture {item_id!r} in this collection.") from None

    def thumbnail(self, index: int) -> bytes:
        """The stored JPEG of the picture at `index`."""
        if not 0 <= index < len(self) or self._thumbs is None:
            raise UnknownItemError(f"There is no picture #{index} in this collection.")
        offset, length = (int(v) for v in self.thumb_index[index])
        return self._thumbs[offset : offset + length].tobytes()

    def label_code(self, label: str) -> int:
        """The integer code of a label name, case-insensitively."""
        wanted = readable_label(label).lower()
        code = next((c for c, name in enumerate(self.label_names) if readable_label(name).lower() == wanted), None)
        if code is None:
            raise UnknownItemError(
                f"There is no label {label!r}; labels are: {', '.join(self.label_names[:25])}"
                + ("…" if len(self.label_names) > 25 else "")
            )
        return code


def _split_of(item_id: str) -> str:
    return item_id.rsplit("-", 1)[0] if "-" in item_id else ""


def _unnormalised_row(vectors: np.ndarray, *, sample: bool, chunk: int = 65536) -> int | None:
    """Index of the first row whose norm is off by more than the tolerance, or None."""
    rows = vectors.shape[0]
    if rows == 0:
        return None
    if sample:
        picks = np.unique(np.linspace(0, rows - 1, num=min(rows, 1024)).astype(np.int64))
        norms = np.linalg.norm(np.asarray(vectors[picks], dtype=np.float32), axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
        return int(picks[bad[0]]) if bad.size else None
    for start in range(0, rows, chunk):
        block = np.asarray(vectors[start : start + chunk], dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        bad = np.flatnonzero(~(np.abs(norms - 1.0) <= NORM_TOLERANCE))  # NaN counts as bad
        if bad.size:
            return start + int(bad[0])
    return None


def read_manifest(path: Path) -> Manifest:
    """Read a store's manifest with an actionable error for every way it can be missing."""
    if not path.exists():
        if path.with_name(path.name + ".partial").exists():
            raise StoreError(f"Store {path} is an unfinished build; run the same `clipbot build` again to finish it.")
        raise StoreError(f"Store {path} does not exist; build one with `clipbot build --out {path}`.")
    if not path.is_dir():
        raise StoreError(f"Store {path} is not a directory.")
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise StoreError(f"Store {path} has no {MANIFEST}: it is incomplete or not a clipbot store; rebuild it.")
    try:
        return Manifest.from_json(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
        raise _fail(path, f"{MANIFEST} is corrupt ({error})") from error
    except StoreError as error:
        raise _fail(path, error.message) from error


def _check_files(path: Path, manifest: Manifest, *, checksums: bool) -> None:
    for name in DATA_FILES:
        recorded = manifest.files.get(name)
        file = path / name
        if recorded is None:
            raise _fail(path, f"the manifest does not list {name}")
        if not file.exists():
            raise _fail(path, f"{name} is missing")
        size = file.stat().st_size
        if size != recorded["bytes"]:
            raise _fail(path, f"{name} is {size} bytes, the manifest says {recorded['bytes']} (truncated or replaced)")
        if checksums and sha256_file(file) != recorded["sha256"]:
            raise _fail(path, f"{name} does not match its checksum (the file is corrupt)")


class StoreWriter:
    """Writes a store into a hidden temporary directory and moves it into place only when complete."""

    def __init__(self, target: str | os.PathLike, *, replace: bool = False) -> None:
        self.target = Path(target)
        if self.target.exists() and not replace:
            raise StoreError(f"{self.target} already exists; choose another --out or pass --force to replace it.")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.staging = self.target.parent / f".{self.target.name}.tmp-{os.getpid()}-{time.time_ns()}"
        self.staging.mkdir()
        self.replace = replace

    def write(
        self,
        manifest: Manifest,
        image_vectors: np.ndarray,
        caption_vectors: np.ndarray,
        ids: Sequence[str],
        labels: np.ndarray,
        rows: np.ndarray,
        captions: Sequence[Caption],
        thumbnails: Iterable[bytes] | None = None,
        *,
        thumbs_file: Path | None = None,
        thumb_index: np.ndarray | None = None,
    ) -> Path:
        """Write every file, then the manifest, then rename into place; returns the store path."""
        try:
            _check_shapes(manifest.dim, image_vectors, caption_vectors, ids, labels, rows, captions)
            staging = self.staging
            np.save(staging / IMAGE_VECTORS, np.ascontiguousarray(image_vectors, dtype=np.float32))
            np.save(staging / CAPTION_VECTORS, np.ascontiguousarray(caption_vectors, dtype=np.float32))
            np.save(staging / ITEM_IDS, np.asarray(list(ids), dtype=str) if len(ids) else np.zeros(0, dtype="<U1"))
            np.save(staging / ITEM_LABELS, np.asarray(labels, dtype=np.int32))
            np.save(staging / ITEM_ROWS, np.asarray(rows, dtype=np.int64))
            (staging / CAPTIONS).write_text(json.dumps([asdict(c) for c in captions], ensure_ascii=False), encoding="utf-8")
            if thumbs_file is not None and thumb_index is not None:
                shutil.copyfile(thumbs_file, staging / THUMBS)
                index = np.asarray(thumb_index, dtype=np.int64)
            else:
                index = _write_thumbnails(staging / THUMBS, thumbnails or [])
            np.save(staging / THUMB_INDEX, index)
            manifest.image_count = len(image_vectors)
            manifest.caption_count = len(caption_vectors)
            manifest.files = {
                name: {"bytes": (staging / name).stat().st_size, "sha256": sha256_file(staging / name)}
                for name in DATA_FILES
            }
            _write_atomic_text(staging / MANIFEST, manifest.to_json())
            _fsync_dir(staging)
            self._move_into_place()
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        return self.target

    def _move_into_place(self) -> None:
        previous = None
        if self.target.exists():
            previous = self.target.parent / f".{self.target.name}.old-{time.time_ns()}"
            os.rename(self.target, previous)
        os.rename(self.staging, self.target)
        _fsync_dir(self.target.parent)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)


def _check_shapes(dim, image_vectors, caption_vectors, ids, labels, rows, captions) -> None:
    n = len(image_vectors)
    if np.ndim(image_vectors) != 2 or np.shape(image_vectors)[1] != dim:
        raise StoreError(f"image vectors have shape {np.shape(image_vectors)}, expected (n, {dim})")
    if np.ndim(caption_vectors) != 2 or np.shape(caption_vectors)[1] != dim:
        raise StoreError(f"caption vectors have shape {np.shape(caption_vectors)}, expected (n, {dim})")
    if not len(ids) == len(labels) == len(rows) == n:
        raise StoreError(f"{n} vectors but {len(ids)} ids, {len(labels)} labels and {len(rows)} rows")
    if len(captions) != len(caption_vectors):
        raise StoreError(f"{len(caption_vectors)} caption vectors but {len(captions)} captions")


def _write_thumbnails(path: Path, thumbnails: Iterable[bytes]) -> np.ndarray:
    index: list[tuple[int, int]] = []
    offset = 0
    with open(path, "wb") as handle:
        for blob in thumbnails:
            handle.write(blob)
            index.append((offset, len(blob)))
            offset += len(blob)
    return np.asarray(index, dtype=np.int64).reshape(-1, 2)


def _write_atomic_text(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
