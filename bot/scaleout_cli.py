"""Command-line verbs for scale-out: `export-milvus`, `milvus-info` and `merge`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import Settings


def register(commands, settings: Settings) -> None:
    """Add the scale-out sub-commands to the parser."""
    from .milvus import INDEX_TYPES, INSERT_BATCH

    uri_help = "Milvus URI: http(s)://host:19530 or a Milvus Lite file *.db (CLIPBOT_MILVUS_URI; default STORE/milvus.db)"
    token_help = "Milvus token, user:password or API key (CLIPBOT_MILVUS_TOKEN; prefer the variable: ps shows arguments)"

    export = commands.add_parser("export-milvus", help="copy a store's vectors into Milvus for --backend milvus")
    export.add_argument("--store", default=settings.store, help="store directory (CLIPBOT_STORE)")
    export.add_argument("--uri", default=settings.milvus_uri, help=uri_help)
    export.add_argument("--token", default=None, help=token_help)
    export.add_argument("--index", default="flat", choices=INDEX_TYPES,
                        help="flat: exact, same results as --backend exact; hnsw, ivf_flat: approximate, faster at scale")
    export.add_argument("--drop", action="store_true", help="replace this store's collections if they exist")
    export.add_argument("--batch-size", type=int, default=INSERT_BATCH, help="vectors per insert")
    export.add_argument("--no-progress", action="store_true", help="no progress bar")
    export.add_argument("--json", action="store_true", help="print JSON")
    export.set_defaults(handler=_export)

    info = commands.add_parser("milvus-info", help="check and describe a store's Milvus collections")
    info.add_argument("--store", default=settings.store, help="store directory (CLIPBOT_STORE)")
    info.add_argument("--uri", default=settings.milvus_uri, help=uri_help)
    info.add_argument("--token", default=None, help=token_help)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(handler=_milvus_info)

    merge = commands.add_parser("merge", help="join partial stores from `build --shard i/n` into one store")
    merge.add_argument("parts", nargs="+", type=Path, metavar="PART", help="partial store directories, any order")
    merge.add_argument("--out", type=Path, required=True, help="merged store directory to write")
    merge.add_argument("--force", action="store_true", help="replace --out if it exists")
    merge.add_argument("--verify", default="full", choices=("full", "quick"),
                       help="check each shard's checksums and norms (full) or sizes and a sample (quick)")
    merge.add_argument("--json", action="store_true", help="print JSON")
    merge.set_defaults(handler=_merge)


def _token(args: argparse.Namespace, settings: Settings) -> str | None:
    return args.token or settings.milvus_token.reveal() or None


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from .milvus import export_store
    from .store import EmbeddingStore

    store = EmbeddingStore.load(args.store, verify="full")
    report = export_store(
        store, args.uri, _token(args, settings), index=args.index, drop=args.drop, batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    data = {
        "uri": report.uri,
        "images_collection": report.collections.images,
        "captions_collection": report.collections.captions,
        "images": report.images,
        "captions": report.captions,
        "index": report.index,
        "seconds": round(report.seconds, 2),
    }
    if args.json:
        print(json.dumps(data))
    else:
        print(f"exported {report.images} images and {report.captions} captions to {report.uri} "
              f"({report.collections.images}, {report.index} index) in {report.seconds:.1f} s")
        print("search it with CLIPBOT_BACKEND=milvus (or --backend milvus)"
              + ("" if args.uri is None else f" and CLIPBOT_MILVUS_URI={report.uri}"))
    return 0


def _milvus_info(args: argparse.Namespace, settings: Settings) -> int:
    from .milvus import MilvusIndex
    from .store import EmbeddingStore

    store = EmbeddingStore.load(args.store, verify="quick")
    with MilvusIndex.connect(store, uri=args.uri, token=_token(args, settings)) as index:
        data = {"store": str(Path(args.store).resolve()), **index.describe()}
    if args.json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            print(f"{key:>19}: {value}")
    return 0


def _merge(args: argparse.Namespace, settings: Settings) -> int:
    from .merge import merge_stores

    report = merge_stores(args.parts, args.out, replace=args.force, verify=args.verify)
    if args.json:
        print(json.dumps({"store": str(report.path), "shards": report.shards, "images": report.images,
                          "captions": report.captions, "seconds": round(report.seconds, 2)}))
    else:
        print(f"merged {report.shards} shards into {report.path}: {report.images} images, "
              f"{report.captions} captions ({report.seconds:.1f} s)")
    return 0
