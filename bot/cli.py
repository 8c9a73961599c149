"""The `clipbot` command line: build a store, find, similar, info, and run the bot, over the same service."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import Settings
from .errors import ClipbotError, InvalidQueryError

log = logging.getLogger(__name__)


def _common(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument("--store", default=settings.store, help="store directory (CLIPBOT_STORE)")
    parser.add_argument("--model", default=settings.model, help="CLIP model id or path (CLIPBOT_MODEL; "
                        "default: the store's own model)")
    parser.add_argument("--device", default=settings.device, help="cuda, mps, cpu (CLIPBOT_DEVICE; default auto)")
    parser.add_argument("--precision", default=settings.precision, choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--backend", default=settings.backend, choices=("exact", "milvus"),
                        help="search back end (CLIPBOT_BACKEND)")
    parser.add_argument("--verify", default=settings.verify, choices=("full", "quick"),
                        help="store validation on load: checksums and all norms, or sizes and a sample")


def _results(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, default=4, help="number of pictures (1-50)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG of the pictures")


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    """The argument parser, with defaults taken from the settings."""
    parser = argparse.ArgumentParser(prog="clipbot", description="Search pictures with words and pictures (CLIP).")
    parser.add_argument("--version", action="version", version=f"clipbot {__version__}")
    parser.add_argument("--log-level", default=settings.log_level, help="DEBUG, INFO, WARNING (CLIPBOT_LOG_LEVEL)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="embed a dataset into a store")
    build.add_argument("--dataset", default="frgfm/imagenette", help="Hugging Face dataset id or local image folder")
    build.add_argument("--config", default=None, help="dataset configuration (imagenette: 320px)")
    build.add_argument("--split", action="append", help="split to embed; repeat or comma-separate "
                       "(default: train and validation, or every split of a folder)")
    build.add_argument("--out", type=Path, default=Path(settings.store), help="store directory to write")
    build.add_argument("--limit", type=int, help="embed only the first N pictures")
    build.add_argument("--batch-size", type=int, default=64)
    build.add_argument("--workers", type=int, help="decoding processes (default: one per core)")
    build.add_argument("--device", default=settings.device)
    build.add_argument("--precision", default=settings.precision, choices=("auto", "fp32", "fp16", "bf16"))
    build.add_argument("--model", default=settings.model, help="CLIP model id or path (CLIPBOT_MODEL)")
    build.add_argument("--captions", type=Path, help="caption file, one per line, instead of ImageNet's classes")
    build.add_argument("--shard", help="embed only slice i of n (i/n) into a partial store for `clipbot merge`")
    build.add_argument("--force", action="store_true", help="replace --out and discard a mismatched partial build")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")

    find = commands.add_parser("find", help="pictures that match a text (`a dog -snow` steers away from snow)")
    find.add_argument("text")
    find.add_argument("--label", help="only pictures with this label")
    find.add_argument("--image", type=Path, help="blend in a picture")
    find.add_argument("--offset", type=int, default=0, help="skip the first N results (paging)")
    _common(find, settings)
    _results(find)

    similar = commands.add_parser("similar", help="captions and pictures nearest to a picture")
    similar.add_argument("image", type=Path)
    similar.add_argument("--captions", type=int, default=None, help="number of captions (default --k)")
    _common(similar, settings)
    _results(similar)

    info = commands.add_parser("info", help="describe a store (and its model)")
    info.add_argument("--store", default=settings.store)
    info.add_argument("--json", action="store_true")

    commands.add_parser("run", help="run the Discord bot (settings from the environment and .env)")
    _register_extensions(commands, settings)
    return parser


def _register_extensions(commands, settings: Settings) -> None:
    """Sub-commands that live in their own modules (scale-out)."""
    from . import scaleout_cli

    scaleout_cli.register(commands, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `clipbot` script and `python -m bot`."""
    from .logs import setup_logging

    try:
        settings = Settings.from_env()
    except ClipbotError as error:
        print(f"clipbot: {error}", file=sys.stderr)
        return 2
    args = build_parser(settings).parse_args(argv)
    secrets = [settings.discord_token.reveal(), settings.milvus_token.reveal()]
    setup_logging(args.log_level, secrets=secrets)
    try:
        return int(args.handler(args, settings) if hasattr(args, "handler") else _dispatch(args, settings) or 0)
    except ClipbotError as error:
        print(f"clipbot: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("clipbot: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "build":
        return _build(args)
    if args.command == "find":
        return _find(args, settings)
    if args.command == "similar":
        return _similar(args, settings)
    if args.command == "info":
        return _info(args)
    if args.command == "run":
        from .__main__ import run_bot

        return run_bot(settings)
    raise AssertionError(args.command)


def _engine(args: argparse.Namespace, settings: Settings):
    from .engine import load_engine

    return load_engine(
        args.store, model=args.model, device=args.device, precision=args.precision, verify=args.verify,
        backend=args.backend, milvus_uri=settings.milvus_uri, milvus_token=settings.milvus_token.reveal() or None,
    )


def _build(args: argparse.Namespace) -> int:
    from .build import BuildOptions, StoreBuilder, parse_shard
    from .encoder import DEFAULT_MODEL, ClipEncoder

    splits = [s.strip() for value in args.split or [] for s in value.split(",") if s.strip()] or None
    options = BuildOptions(
        dataset=args.dataset,
        config=args.config,
        splits=splits,
        limit=args.limit,
        shard=parse_shard(args.shard) if args.shard else None,
        captions_file=str(args.captions) if args.captions else None,
        batch_size=args.batch_size,
        workers=args.workers,
        force=args.force,
        progress=not args.no_progress,
    )
    if args.limit is not None and args.limit < 1:
        raise InvalidQueryError("--limit must be at least 1.")
    encoder = ClipEncoder.load(args.model or DEFAULT_MODEL, device=args.device, precision=args.precision)
    path = StoreBuilder(encoder, options).build(args.out)
    print(f"built {path}")
    return 0


def _find(args: argparse.Namespace, settings: Settings) -> int:
    from .images import open_image
    from .render import find_text

    engine = _engine(args, settings)
    image = open_image(_read(args.image)) if args.image else None
    result = engine.service.find(args.text, args.k, label=args.label, offset=args.offset, image=image)
    _emit(args, result.to_json(), find_text(result), result.images, engine)
    return 0


def _similar(args: argparse.Namespace, settings: Settings) -> int:
    from .images import open_image
    from .render import similar_text

    engine = _engine(args, settings)
    image = open_image(_read(args.image))
    result = engine.service.similar(image, args.k, captions=args.captions)
    _emit(args, result.to_json(), similar_text(result), result.images, engine)
    return 0


def _emit(args, data: dict, text: str, images, engine) -> None:
    from .render import contact_sheet

    if args.sheet and images:
        args.sheet.write_bytes(contact_sheet(images, engine.store.thumbnail))
        log.info("wrote %s", args.sheet)
    print(json.dumps(data, ensure_ascii=False) if args.json else text)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidQueryError(f"Cannot read {path}: {error.strerror}.") from error


def _info(args: argparse.Namespace) -> int:
    from .store import EmbeddingStore

    store = EmbeddingStore.load(args.store, verify="quick")
    m = store.manifest
    data = {
        "store": str(Path(args.store).resolve()),
        "model": m.model_id,
        "model_fingerprint": m.model_fingerprint,
        "dim": m.dim,
        "images": m.image_count,
        "captions": m.caption_count,
        "labels": m.label_names,
        "dataset": m.dataset,
        "created": m.created,
        "format_version": m.version,
        "bytes": sum(entry["bytes"] for entry in m.files.values()),
    }
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        for key, value in data.items():
            print(f"{key:>18}: {', '.join(value) if key == 'labels' else value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
