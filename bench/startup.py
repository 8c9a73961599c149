"""Launch to ready, and peak memory, for a real-sized store and a 1M-vector one: memory-mapped, not copied."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from .common import Context, Row, synthetic_store

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


def launch(mode: str, store: Path, model_dir: Path, verify: str = "quick") -> dict:
    """Start a fresh interpreter that loads everything, and time it from launch until it reports ready."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.startup_child",
            mode,
            str(store),
            "--model",
            str(model_dir),
            "--verify",
            verify,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"start-up of {mode} failed:\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["wall_s"] = wall
    return report


def run(ctx: Context, model_dir: Path, sizes: list[int]) -> None:
    """Tutorial start-up against clipbot's with verify=quick and verify=full, at each store size."""
    for count in sizes:
        store = synthetic_store(ctx.out, count, model_dir)
        tutorial = launch("tutorial", store, model_dir)
        quick = launch("ours", store, model_dir, "quick")
        full = launch("ours", store, model_dir, "full")
        name = f"{count:,} vectors"
        ctx.add(
            Row(
                "startup",
                f"launch to ready, {name}, verify=quick",
                tutorial["phases"]["ready_s"],
                quick["phases"]["ready_s"],
                "s",
                note=f"encoder {quick['dtype']}, includes the precision probe",
            )
        )
        ctx.add(
            Row(
                "startup",
                f"launch to ready, {name}, verify=full",
                tutorial["phases"]["ready_s"],
                full["phases"]["ready_s"],
                "s",
                note="hashes every file, checks every norm",
            )
        )
        peak = "VmHWM"  # per address space: ru_maxrss would carry the forking parent's peak across exec
        ctx.add(
            Row(
                "startup",
                f"peak RSS at ready, {name}, verify=quick",
                tutorial["memory"][peak],
                quick["memory"][peak],
                "MiB",
            )
        )
        ctx.add(
            Row(
                "startup",
                f"peak RSS at ready, {name}, verify=full",
                tutorial["memory"][peak],
                full["memory"][peak],
                "MiB",
                note="the norm check maps the whole matrix: file-backed",
            )
        )
        ctx.add(
            Row(
                "startup",
                f"anonymous (copied) memory at ready, {name}, verify=quick",
                tutorial["memory"].get("RssAnon"),
                quick["memory"].get("RssAnon", 0.0),
                "MiB",
            )
        )
        ctx.add(
            Row(
                "startup",
                f"peak RSS after the first /find and /similar, {name}, verify=quick",
                tutorial["after_queries"][peak],
                quick["after_queries"][peak],
                "MiB",
            )
        )
        ctx.add(
            Row(
                "startup",
                f"RSS after the first /find and /similar (steady state), {name}, verify=quick",
                tutorial["after_queries"]["VmRSS"],
                quick["after_queries"]["VmRSS"],
                "MiB",
            )
        )
        log.info("start-up %s: tutorial %s / quick %s / full %s", name, tutorial, quick, full)
