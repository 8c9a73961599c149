"""`python -m bench`: run the benchmark parts and print one table of ratios measured in this run."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

# Before transformers or datasets are imported: the bench never reaches the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# What bot.encoder sets before torch loads; here torch may load first, so the tutorial baseline and clipbot
# both run under it (the "levers" rows measure what it is worth, in fresh processes).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PARTS = ("serving", "load", "startup", "search", "build", "gpu")
DEFAULT_PARTS = ("serving", "load", "startup", "search", "build")


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "").replace(",", "")) for part in text.split("+") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: which parts, and how big."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated parts of {','.join(PARTS)} (default: all but gpu)",
    )
    parser.add_argument("--out", type=Path, default=None, help="cache and results folder (default bench/out)")
    parser.add_argument(
        "--queries", type=int, default=40, help="one-at-a-time /find queries (half as many /similar)"
    )
    parser.add_argument("--load-seconds", type=float, default=15.0, help="measured seconds per load run")
    parser.add_argument(
        "--load-warmup", type=float, default=3.0, help="unmeasured seconds before each load run"
    )
    parser.add_argument(
        "--startup-sizes",
        type=_sizes,
        default=_sizes("13394+1000000"),
        help="store sizes for start-up, '+'-separated (default 13394+1000000)",
    )
    parser.add_argument(
        "--search-sizes",
        type=_sizes,
        default=_sizes("13394+100000+1000000"),
        help="matrix sizes for exact search, '+'-separated (default 13394+100000+1000000)",
    )
    parser.add_argument("--search-repeats", type=int, default=15, help="single queries timed per size")
    parser.add_argument("--build-images", type=int, default=1000, help="JPEGs in the CPU build benchmark")
    parser.add_argument(
        "--build-sample", type=int, default=60, help="pictures timed in the tutorial build loop"
    )
    parser.add_argument("--gpu-images", type=int, default=30_000, help="JPEGs in the GPU build benchmark")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke test of every part in ~2 min"
    )
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if args.quick:
        args.queries, args.load_seconds, args.load_warmup = 8, 3.0, 1.0
        args.startup_sizes, args.search_sizes, args.search_repeats = [13394], [13394, 100_000], 5
        args.build_images, args.build_sample, args.gpu_images = 200, 10, 2000
    return args


def table(rows) -> str:
    """The results as a Markdown table."""
    from bench.common import fmt

    lines = [
        "| part | measure | baseline | clipbot | unit | ratio | target | holds |",
        "| --- | --- | ---: | ---: | --- | ---: | --- | --- |",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        bound = (">= " if row.higher_is_better else "<= ") + f"{row.limit:,g} {row.unit}" if row.limit else ""
        target = f">= {row.target:g}x" if row.target else bound
        holds = {True: "yes", False: "**no**", None: ""}[row.holds]
        measure = row.measure + (f" ({row.note})" if row.note else "")
        lines.append(
            f"| {row.part} | {measure} | {fmt(row.baseline)} | {fmt(row.ours)} | {row.unit} | {ratio} "
            f"| {target} | {holds} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts, print the machine, the table and the notes, and save them as JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "datasets", "urllib3", "filelock", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from bench.common import DEFAULT_OUT, Context, bench_model, machine

    out = args.out or DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, quick=args.quick)
    started = time.perf_counter()
    model_dir = bench_model(out) if set(args.parts) - {"gpu"} else None
    timings: dict[str, float] = {}
    serving = None
    for part in args.parts:
        part_started = time.perf_counter()
        if part == "serving" or (part == "load" and serving is None):
            from bench import serving as serving_part

            if part == "serving":
                serving = serving_part.run(ctx, model_dir, args.queries)
            else:
                serving = serving_part.open_serving(ctx, model_dir)
        if part == "load":
            from bench import load

            load.run(ctx, serving, args.load_seconds, args.load_warmup)
        elif part == "startup":
            from bench import startup

            startup.run(ctx, model_dir, args.startup_sizes)
        elif part == "search":
            from bench import search

            search.run(ctx, model_dir, args.search_sizes, args.search_repeats)
        elif part == "build":
            from bench import build

            build.run(ctx, model_dir, args.build_images, args.build_sample)
        elif part == "gpu":
            from bench import gpu

            gpu.run(ctx, out, args.gpu_images)
        timings[part] = time.perf_counter() - part_started
    if serving is not None:
        serving.close()
    info = machine()
    command = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# clipbot benchmarks: python -m bench {command}".rstrip())
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"GPU: {info['gpu'] or 'none'}; "
        f"torch {info['torch']} ({info['torch_threads']} threads), transformers {info['transformers']}, "
        f"numpy {info['numpy']}; load average at the end {info['load_average']}"
    )
    print()
    print(table(ctx.rows))
    if ctx.notes:
        print()
        for note in ctx.notes:
            print(f"- {note}")
    seconds = time.perf_counter() - started
    print(f"\nparts: {', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}; total {seconds:.0f} s")
    results = {
        "argv": argv if argv is not None else sys.argv[1:],
        "machine": info,
        "seconds": timings,
        "rows": [row.to_json() for row in ctx.rows],
        "notes": ctx.notes,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    checked = [row for row in ctx.rows if row.holds is not None]
    print(f"targets met: {sum(bool(row.holds) for row in checked)} of {len(checked)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
