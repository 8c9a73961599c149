"""Dataset to store: batched, resumable, sharded, with a progress bar."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import BuildError, EncoderError
from .images import open_image, thumbnail_jpeg
from .preprocess import PixelSpec, to_pixels
from .prompts import imagenet_classnames, readable_label, templated
from .store import Caption, Manifest, StoreWriter

log = logging.getLogger(__name__)

DEFAULT_DATASET = "frgfm/imagenette"
DEFAULT_CONFIG = "320px"
DEFAULT_SPLITS = ("train", "validation")
THUMBNAIL_MAX_SIDE = 512
# Items per resumable chunk: a killed build loses at most this much work.
CHUNK_SIZE = 1024
BUILD_STATE = "build.json"
UNLABELED = "unlabeled"


@dataclass
class BuildOptions:
    """Everything that decides what a build produces (and so whether a partial build can be resumed)."""

    dataset: str = DEFAULT_DATASET
    config: str | None = None
    splits: list[str] | None = None
    limit: int | None = None
    shard: tuple[int, int] | None = None
    captions_file: str | None = None
    batch_size: int = 64
    workers: int | None = None
    chunk_size: int = CHUNK_SIZE
    force: bool = False
    progress: bool = True
    imagenet_captions: bool = True

    def identity(self) -> dict:
        """The options that shape the store's content."""
        return {
            "dataset": self.dataset,
            "config": self.config,
            "splits": self.splits,
            "limit": self.limit,
            "shard": list(self.shard) if self.shard else None,
            "captions_file": self.captions_file,
            "imagenet_captions": self.imagenet_captions,
            "chunk_size": self.chunk_size,
        }


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` to (i, n) with 0 <= i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise BuildError(f"--shard must look like i/n, e.g. 0/4 (got {text!r}).") from None
    if count < 1 or not 0 <= index < count:
        raise BuildError(f"--shard {text}: need 0 <= i < n.")
    return index, count


@dataclass(frozen=True)
class RowRef:
    """One picture to embed: its split and row in the dataset."""

    split: str
    row: int


class SourceDataset:
    """A Hugging Face dataset (hub id or local image folder) opened for raw image bytes."""

    def __init__(
        self, dataset: str, config: str | None, splits: Sequence[str] | None, *, progress: bool = True
    ) -> None:
        import datasets

        if not progress:
            datasets.disable_progress_bars()
        self.name = dataset
        local = Path(dataset).expanduser()
        self.is_local = local.exists()
        if self.is_local:
            config = None
        elif config is None and dataset == DEFAULT_DATASET:
            config = DEFAULT_CONFIG
        self.config = config
        try:
            loaded = datasets.load_dataset(str(local) if self.is_local else dataset, config)
        except Exception as error:  # datasets raises many unrelated types for "cannot get it"
            raise BuildError(f"Cannot load the dataset {dataset!r}: {str(error).splitlines()[0]}") from error
        available = list(loaded.keys())
        if splits:
            missing = [s for s in splits if s not in available]
            if missing:
                raise BuildError(f"The dataset has no split {', '.join(missing)}; it has {', '.join(available)}.")
            chosen = list(splits)
        elif self.is_local:
            chosen = available
        else:
            chosen = [s for s in DEFAULT_SPLITS if s in available] or available
        self.splits = chosen
        first = loaded[chosen[0]]
        self.image_column = _column_of(first.features, "Image")
        self.label_column = _column_of(first.features, "ClassLabel", required=False)
        if self.image_column is None:
            raise BuildError(f"The dataset {dataset!r} has no image column.")
        raw_names = first.features[self.label_column].names if self.label_column else [UNLABELED]
        # Imagenette revisions label with WordNet ids; people search for "tench", not "n01440764".
        self.label_names = [readable_label(n) if n.startswith("n0") else n for n in raw_names]
        self.has_labels = self.label_column is not None
        self.parts = {
            split: loaded[split].cast_column(self.image_column, datasets.Image(decode=False)) for split in chosen
        }

    def rows(self) -> list[RowRef]:
        """Every row of the chosen splits, in order."""
        return [RowRef(split, row) for split in self.splits for row in range(len(self.parts[split]))]

    def raw(self, ref: RowRef) -> tuple[bytes, int]:
        """Image bytes and label code of one row."""
        example = self.parts[ref.split][ref.row]
        image = example[self.image_column]
        data = image.get("bytes")
        if data is None:
            with open(image["path"], "rb") as handle:
                data = handle.read()
        label = int(example[self.label_column]) if self.label_column else 0
        return data, label


def _column_of(features, kind: str, required: bool = True) -> str | None:
    for name, feature in features.items():
        if type(feature).__name__ == kind:
            return name
    return None


@dataclass
class PreparedItem:
    """A picture ready to encode (CPU pixels, or JPEG bytes the GPU decodes itself), with its thumbnail."""

    pixels: np.ndarray | None
    thumbnail: bytes
    label: int
    ok: bool = True
    error: str = ""
    jpeg: bytes | None = None


def prepare_item(data: bytes, label: int, spec: PixelSpec) -> PreparedItem:
    """Decode, preprocess and thumbnail one picture. Runs in worker processes."""
    try:
        image = open_image(data, draft_size=THUMBNAIL_MAX_SIDE)
    except Exception as error:
        return PreparedItem(np.zeros((3, spec.crop, spec.crop), np.float32), b"", label, ok=False, error=str(error))
    thumbnail = _reuse_jpeg(data, image) or thumbnail_jpeg(image, THUMBNAIL_MAX_SIDE)
    return PreparedItem(to_pixels(image, spec), thumbnail, label)


def prepare_raw(data: bytes, label: int, spec: PixelSpec) -> PreparedItem:
    """For GPU decoding: a JPEG that needs no CPU work passes through as bytes; anything else is prepared here.

    Runs in worker processes. Only the header is read: the file is its own thumbnail, so nothing is decoded.
    """
    if _device_decodable(data, spec):
        return PreparedItem(None, data, label, jpeg=data)
    return prepare_item(data, label, spec)


def _device_decodable(data: bytes, spec: PixelSpec) -> bool:
    """An upright baseline RGB JPEG, small enough to be its own thumbnail and big enough for the crop."""
    if data[:3] != b"\xff\xd8\xff":
        return False
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
            return (
                header.format == "JPEG"
                and header.mode == "RGB"
                and not header.info.get("progressive") and not header.info.get("progression")
                and header.getexif().get(0x0112, 1) == 1
                and max(width, height) <= THUMBNAIL_MAX_SIDE
                and min(width, height) >= spec.crop
            )
    except Exception:  # anything odd about the file goes the careful CPU way
        return False


def _reuse_jpeg(data: bytes, image: Image.Image) -> bytes | None:
    """The original bytes when they already are an upright RGB JPEG small enough to show."""
    if data[:3] != b"\xff\xd8\xff" or max(image.size) > THUMBNAIL_MAX_SIDE:
        return None
    with Image.open(io.BytesIO(data)) as original:
        if original.size != image.size or original.getexif().get(0x0112, 1) != 1 or original.mode != "RGB":
            return None
    return data


class _PreparedRows:
    """A torch-style map dataset over row references, preparing each in the worker that asks."""

    def __init__(self, source: SourceDataset, refs: Sequence[RowRef], spec: PixelSpec, raw_jpeg: bool = False) -> None:
        self.source, self.refs, self.spec = source, refs, spec
        self.prepare = prepare_raw if raw_jpeg else prepare_item

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, position: int) -> PreparedItem:
        data, label = self.source.raw(self.refs[position])
        return self.prepare(data, label, self.spec)


def _collate(items: list[PreparedItem]) -> list[PreparedItem]:
    return items


def default_workers(total: int) -> int:
    """Worker processes for decoding: none for tiny builds, else one per core (at most 8)."""
    if total < 256:
        return 0
    return max(1, min(8, os.cpu_count() or 1))


class StoreBuilder:
    """Embeds a dataset into a store with `encoder`, resumably, in chunks under `OUT.partial/`."""

    def __init__(self, encoder, options: BuildOptions) -> None:
        self.encoder = encoder
        self.options = options

    def build(self, out: str | os.PathLike, on_progress: Callable[[int, int], None] | None = None) -> Path:
        """Run (or resume) the build and move the finished store to `out`. Blocking: minutes."""
        out = Path(out)
        options = self.options
        if out.exists() and not options.force:
            raise BuildError(f"{out} already exists; choose another --out or pass --force to replace it.")
        if options.captions_file:
            _read_caption_file(options.captions_file)  # fail now, not after an hour of embedding
        source = SourceDataset(options.dataset, options.config, options.splits, progress=options.progress)
        refs = source.rows()
        if options.limit is not None:
            refs = refs[: options.limit]
        if options.shard:
            index, count = options.shard
            refs = refs[len(refs) * index // count : len(refs) * (index + 1) // count]
        if not refs:
            raise BuildError("Nothing to build: the dataset (after --limit/--shard) has no rows.")
        partial = out.parent / f"{out.name}.partial"
        state = self._open_partial(partial, source, len(refs))
        chunks = [refs[start : start + options.chunk_size] for start in range(0, len(refs), options.chunk_size)]
        done = {i for i in range(len(chunks)) if (partial / f"chunk-{i:05d}.npz").exists()}
        if done:
            log.info("resuming %s: %d of %d chunks already embedded", partial, len(done), len(chunks))
        started = time.perf_counter()
        already = sum(len(chunks[i]) for i in done)
        progress = _progress_bar(len(refs), already, options.progress)
        counted = [already]

        def advance(count: int) -> None:
            progress.update(count)
            counted[0] += count
            if on_progress is not None:
                on_progress(counted[0], len(refs))

        try:
            for number, chunk in enumerate(chunks):
                if number in done:
                    continue
                self._embed_chunk(source, chunk, partial / f"chunk-{number:05d}", advance)
        finally:
            progress.close()
        elapsed = time.perf_counter() - started
        log.info("embedded %d pictures in %.1f s", len(refs) - sum(len(chunks[i]) for i in done), elapsed)
        captions, caption_vectors = self._captions(source)
        path = self._assemble(out, partial, source, state, refs, len(chunks), captions, caption_vectors)
        shutil.rmtree(partial, ignore_errors=True)
        return path

    def _open_partial(self, partial: Path, source: SourceDataset, total: int) -> dict:
        info = self.encoder.info
        state = {
            "options": self.options.identity(),
            "model_fingerprint": info.fingerprint,
            "model_id": info.model_id,
            "dim": info.dim,
            "total": total,
            "splits": source.splits,
            "label_names": source.label_names,
        }
        state_file = partial / BUILD_STATE
        if state_file.exists():
            previous = json.loads(state_file.read_text(encoding="utf-8"))
            if previous != state:
                if not self.options.force:
                    raise BuildError(
                        f"{partial} holds an unfinished build with other settings or another model; "
                        "rerun it with the same options, or pass --force to start over."
                    )
                shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        if not state_file.exists():
            state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")
        return state

    def _embed_chunk(self, source, chunk: Sequence[RowRef], stem: Path, advance: Callable[[int], None]) -> None:
        from torch.utils.data import DataLoader

        spec = self.encoder.pixel_spec
        workers = self.options.workers if self.options.workers is not None else default_workers(len(chunk))
        on_device = bool(getattr(self.encoder, "decodes_jpeg", False))
        loader = DataLoader(
            _PreparedRows(source, chunk, spec, raw_jpeg=on_device),
            batch_size=self.options.batch_size,
            num_workers=workers,
            collate_fn=_collate,
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )
        vectors, labels, thumbs, oks = [], [], [], []
        for batch in loader:
            for item in batch:
                if not item.ok:
                    log.warning("skipping an undecodable picture: %s", item.error)
            vectors.append(self._encode_batch(batch, spec))
            labels.extend(item.label for item in batch)
            thumbs.extend(item.thumbnail for item in batch)
            oks.extend(item.ok for item in batch)
            advance(len(batch))
        valid = np.asarray(oks, dtype=bool)
        failures = int((~valid).sum())
        matrix = np.concatenate(vectors)[valid]
        rows = np.asarray([ref.row for ref in chunk], dtype=np.int64)[valid]
        splits = np.asarray([ref.split for ref in chunk])[valid]
        kept_thumbs = [blob for blob, keep in zip(thumbs, valid) if keep]
        lengths = np.asarray([len(blob) for blob in kept_thumbs], dtype=np.int64)
        temporary = stem.with_name(stem.name + ".tmp.npz")
        with open(stem.with_suffix(".thumbs"), "wb") as handle:
            for blob in kept_thumbs:
                handle.write(blob)
        np.savez(
            temporary, vectors=matrix, labels=np.asarray(labels, dtype=np.int32)[valid],
            rows=rows, splits=splits, lengths=lengths,
        )
        os.replace(temporary, stem.with_suffix(".npz"))  # the chunk counts as done only once complete
        if failures:
            log.warning("%d pictures of this chunk could not be decoded and were left out", failures)

    def _encode_batch(self, batch: list[PreparedItem], spec: PixelSpec) -> np.ndarray:
        """Vectors in batch order: JPEG bytes decoded on the GPU, everything else from CPU pixels."""
        on_device = [i for i, item in enumerate(batch) if item.jpeg is not None]
        out = np.empty((len(batch), self.encoder.info.dim), dtype=np.float32)
        if on_device:
            try:
                out[on_device] = self.encoder.encode_jpegs([batch[i].jpeg for i in on_device])
            except EncoderError as error:  # nvJPEG refuses a few valid files: decode that batch on the CPU
                log.warning("GPU decoding failed for a batch, decoding it on the CPU: %s", error)
                for i in on_device:
                    batch[i] = prepare_item(batch[i].jpeg, batch[i].label, spec)
                on_device = []
        chosen = set(on_device)
        on_cpu = [i for i in range(len(batch)) if i not in chosen]
        if on_cpu:
            out[on_cpu] = self.encoder.encode_pixels(np.stack([batch[i].pixels for i in on_cpu]))
        return out

    def _captions(self, source: SourceDataset) -> tuple[list[Caption], np.ndarray]:
        captions: list[Caption] = []
        vectors: list[np.ndarray] = []
        seen: set[str] = set()

        def add_templated(names: Sequence[str], kind: str) -> None:
            names = [n for n in names if n.lower() not in seen]
            if not names:
                return
            prompts = [prompt for name in names for prompt in templated(name)]
            encoded = self.encoder.encode_texts(prompts)
            per_name = encoded.reshape(len(names), -1, encoded.shape[1]).mean(axis=1)
            per_name /= np.linalg.norm(per_name, axis=1, keepdims=True)
            for name, vector in zip(names, per_name):
                seen.add(name.lower())
                captions.append(Caption(text=name, kind=kind))
                vectors.append(vector)

        if source.has_labels:
            add_templated([readable_label(n) for n in source.label_names], "class")
        if self.options.captions_file:
            lines = _read_caption_file(self.options.captions_file)
            lines = [line for line in lines if line.lower() not in seen]
            encoded = self.encoder.encode_texts(lines)
            for line, vector in zip(lines, encoded):
                seen.add(line.lower())
                captions.append(Caption(text=line, kind="file"))
                vectors.append(vector)
        elif self.options.imagenet_captions:
            add_templated(list(imagenet_classnames()), "imagenet")
        matrix = np.asarray(vectors, dtype=np.float32).reshape(-1, self.encoder.info.dim)
        return captions, matrix

    def _assemble(self, out, partial, source, state, refs, chunk_count, captions, caption_vectors) -> Path:
        vectors, labels, rows, ids, lengths = [], [], [], [], []
        thumbs_file = partial / "thumbs.all"
        with open(thumbs_file, "wb") as joined:
            for number in range(chunk_count):
                stem = partial / f"chunk-{number:05d}"
                with np.load(stem.with_suffix(".npz")) as chunk:
                    vectors.append(chunk["vectors"])
                    labels.append(chunk["labels"])
                    rows.append(chunk["rows"])
                    lengths.append(chunk["lengths"])
                    ids.extend(f"{split}-{row}" for split, row in zip(chunk["splits"], chunk["rows"]))
                with open(stem.with_suffix(".thumbs"), "rb") as part:
                    shutil.copyfileobj(part, joined)
        all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(all_lengths)[:-1]]).astype(np.int64)
        info = self.encoder.info
        options = self.options
        manifest = Manifest(
            model_id=info.model_id,
            model_fingerprint=info.fingerprint,
            dim=info.dim,
            dataset={
                "id": options.dataset if not source.is_local else str(Path(options.dataset).resolve()),
                "config": source.config,
                "splits": source.splits,
                "limit": options.limit,
                "shard": list(options.shard) if options.shard else None,
                "rows": len(refs),
            },
            image_count=0,
            caption_count=0,
            label_names=list(source.label_names),
            splits=list(source.splits),
        )
        writer = StoreWriter(out, replace=options.force)
        return writer.write(
            manifest,
            np.concatenate(vectors) if vectors else np.zeros((0, info.dim), np.float32),
            caption_vectors,
            ids,
            np.concatenate(labels) if labels else np.zeros(0, np.int32),
            np.concatenate(rows) if rows else np.zeros(0, np.int64),
            captions,
            thumbs_file=thumbs_file,
            thumb_index=np.stack([offsets, all_lengths], axis=1) if len(all_lengths) else np.zeros((0, 2), np.int64),
        )


def _read_caption_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise BuildError(f"Cannot read the captions file {path}: {error.strerror}.") from error
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = list(dict.fromkeys(line for line in lines if line))
    if not lines:
        raise BuildError(f"The captions file {path} has no captions (one per line).")
    return lines


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc="embedding", disable=not enabled, smoothing=0.1)
