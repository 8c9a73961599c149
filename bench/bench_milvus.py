"""Exact numpy search against Milvus Lite (FLAT, IVF_FLAT, HNSW) on synthetic CLIP-sized vectors, in one run.

    python bench/bench_milvus.py --rows 1000000 --indexes flat,ivf_flat

Writes a store of `--rows` clustered unit vectors, measures ExactIndex over the memory-mapped store in a fresh
process (so its peak RSS is its own), starts a Milvus Lite server in another process, exports the store into it
with `clipbot export-milvus`'s code and measures each index: latency p50/p99 for one query and for a batch of
32 (k=10), recall@10 against exact, and the server's memory from /proc. Prints a table with ratios to exact.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.index import ExactIndex  # noqa: E402
from bot.milvus import (  # noqa: E402
    MilvusConnection,
    MilvusIndex,
    collection_names,
    create_vector_index,
    export_store,
    index_settings,
)
from bot.store import Caption, EmbeddingStore, Manifest, StoreWriter  # noqa: E402

K = 10
BATCH = 32
CHUNK = 65_536
# Picture embeddings cluster by subject: each vector is a cluster centre plus noise of this norm, which puts
# it at cos ~0.8 to its centre (1 / sqrt(1 + noise^2)); more noise blurs the clusters and makes ANN harder.
NOISE = 0.75


def synthetic(rng: np.random.Generator, centres: np.ndarray, rows: int, noise_norm: float = NOISE) -> np.ndarray:
    """`rows` unit vectors scattered around random centres."""
    noise = rng.standard_normal((rows, centres.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors = centres[rng.integers(0, len(centres), rows)] + noise_norm * noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_store(path: Path, rows: int, dim: int, seed: int, noise: float) -> tuple[np.ndarray, float]:
    """A store of synthetic vectors (built chunk by chunk into a memory map) and the queries; returns seconds."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, rows // 1000), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    scratch = path.parent / "vectors.f32"
    vectors = np.memmap(scratch, dtype=np.float32, mode="w+", shape=(rows, dim))
    for start in range(0, rows, CHUNK):
        stop = min(rows, start + CHUNK)
        vectors[start:stop] = synthetic(rng, centres, stop - start, noise)
    vectors.flush()
    captions = [Caption(text=f"caption {i}", kind="class") for i in range(100)]
    manifest = Manifest(model_id="synthetic", model_fingerprint=f"synthetic-{seed}", dim=dim,
                        dataset={"id": "synthetic", "rows": rows}, image_count=0, caption_count=0,
                        label_names=[f"label{i}" for i in range(10)], splits=["train"])
    StoreWriter(path, replace=True).write(
        manifest, vectors, synthetic(rng, centres, len(captions)), [f"train-{i}" for i in range(rows)],
        (np.arange(rows) % 10).astype(np.int32), np.arange(rows, dtype=np.int64), captions, (b"" for _ in range(rows)),
    )
    del vectors
    scratch.unlink()
    queries = synthetic(np.random.default_rng(seed + 1), centres, 4096, noise)
    return queries, time.perf_counter() - started


def proc_memory(pid: int | str = "self") -> dict[str, float]:
    """Current and peak resident memory of a process, in MiB, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return {"rss": fields.get("VmRSS", 0.0), "peak": fields.get("VmHWM", 0.0)}


def latencies(search, queries: np.ndarray, singles: int, batches: int) -> dict[str, float]:
    """p50/p99 milliseconds of `singles` one-query searches and of `batches` 32-query searches, after a warm-up."""
    search(queries[:1])
    search(queries[:BATCH])
    one = []
    for i in range(singles):
        started = time.perf_counter()
        search(queries[i : i + 1])
        one.append((time.perf_counter() - started) * 1e3)
    many = []
    for b in range(batches):
        block = queries[singles + b * BATCH : singles + (b + 1) * BATCH]
        started = time.perf_counter()
        search(block)
        many.append((time.perf_counter() - started) * 1e3)
    return {
        "p50_1": float(np.percentile(one, 50)), "p99_1": float(np.percentile(one, 99)),
        "p50_32": float(np.percentile(many, 50)), "p99_32": float(np.percentile(many, 99)),
    }


def exact_worker(store_path: str, queries_path: str, singles: int, batches: int, out: str) -> None:
    """Runs in its own process: exact search over the memory-mapped store, with that process's peak RSS."""
    store = EmbeddingStore.load(store_path, verify="quick")
    queries = np.load(queries_path)
    index = ExactIndex(store)
    result = latencies(lambda q: index.search_images(q, K), queries, singles, batches)
    recall_queries = queries[: singles + batches * BATCH]
    truth = [[hit.index for hit in hits] for hits in index.search_images(recall_queries, K)]
    np.save(out + ".truth.npy", np.asarray(truth, dtype=np.int64))
    result.update(memory=proc_memory())
    Path(out).write_text(json.dumps(result))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def lite_server(data_dir: Path):
    """A Milvus Lite server in its own process, so its memory is measured apart from this one."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Milvus Lite server did not start")
            time.sleep(0.2)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)  # lets it close the database cleanly
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def recall_at_k(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth.tolist())]))


def reindex(connection: MilvusConnection, name: str, kind: str, rows: int) -> float:
    """Swap the vector index of a loaded collection (no re-insert); returns build + load seconds."""
    client = connection.client
    started = time.perf_counter()
    client.release_collection(name)
    client.drop_index(name, "vector")
    create_vector_index(client, name, kind, rows, wait=False)
    client.load_collection(name)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--indexes", default="flat,ivf_flat,hnsw", help="comma-separated: flat, ivf_flat, hnsw")
    parser.add_argument("--singles", type=int, default=100, help="one-query searches timed per back end")
    parser.add_argument("--batches", type=int, default=10, help="32-query searches timed per back end")
    parser.add_argument("--flat-singles", type=int, default=None, help="fewer one-query searches for Milvus FLAT")
    parser.add_argument("--workdir", type=Path, help="where the store and the Lite database go (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=NOISE, help="noise norm around cluster centres (harder: 1.5)")
    args = parser.parse_args()
    kinds = [kind.strip() for kind in args.indexes.split(",") if kind.strip()]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-milvus-"))
    work.mkdir(parents=True, exist_ok=True)
    store_path = work / "store"
    rows_out: list[dict] = []
    try:
        queries, gen_seconds = write_store(store_path, args.rows, args.dim, args.seed, args.noise)
        np.save(work / "queries.npy", queries)
        print(f"store: {args.rows} x {args.dim} float32 written in {gen_seconds:.0f} s", flush=True)

        out = str(work / "exact.json")
        subprocess.run([sys.executable, __file__, "--worker-exact", str(store_path), str(work / "queries.npy"),
                        str(args.singles), str(args.batches), out], check=True)
        exact = json.loads(Path(out).read_text())
        truth = np.load(out + ".truth.npy")
        rows_out.append({"backend": "exact (numpy, mmap)", "build_s": 0.0, **exact, "recall": 1.0,
                         "memory": f"{exact['memory']['peak']:.0f} MiB peak (searching process)"})
        print(format_row(rows_out[0], rows_out[0]), flush=True)

        store = EmbeddingStore.load(store_path, verify="quick")
        names = collection_names(store.manifest)
        with lite_server(work / "lite.db") as (server, uri):
            report = export_store(store, uri, index=kinds[0], progress=True)
            insert_memory = proc_memory(server.pid)
            print(f"export ({kinds[0]}): {report.seconds:.0f} s, server {insert_memory['peak']:.0f} MiB peak",
                  flush=True)
            connection = MilvusConnection(uri)
            try:
                for position, kind in enumerate(kinds):
                    build_s = report.seconds if position == 0 else reindex(connection, names.images, kind, len(store))
                    _, search = index_settings(kind, len(store))
                    index = MilvusIndex(connection, names, image_count=len(store), caption_count=len(store.captions),
                                        index=kind, image_search=search, caption_search={})
                    singles = args.flat_singles if kind == "flat" and args.flat_singles else args.singles
                    timing = latencies(lambda q, index=index: index.search_images(q, K), queries, singles,
                                       args.batches)
                    recall_queries = queries[: len(truth)]
                    found = [[hit.index for hit in hits] for start in range(0, len(recall_queries), BATCH)
                             for hits in index.search_images(recall_queries[start : start + BATCH], K)]
                    memory = proc_memory(server.pid)
                    rows_out.append({
                        "backend": f"milvus lite {kind}", "build_s": build_s, **timing,
                        "recall": recall_at_k(found, truth),
                        "memory": f"{memory['rss']:.0f} MiB now, {memory['peak']:.0f} peak (server process)",
                    })
                    print(format_row(rows_out[-1], rows_out[0]), flush=True)
            finally:
                connection.close()
        driver = proc_memory()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(args, rows_out, driver)
    return 0


COLUMNS = ("back end", "build s", "1 query p50 ms", "p99", "32 queries p50 ms", "p99", "x exact (1q p50)",
           "recall@10", "memory (peak RSS from /proc)")


def format_row(row: dict, base: dict) -> str:
    """One markdown table row; the ratio is to exact search measured in the same run."""
    ratio = row["p50_1"] / base["p50_1"] if base["p50_1"] else float("nan")
    cells = (row["backend"], f"{row['build_s']:.0f}", f"{row['p50_1']:.1f}", f"{row['p99_1']:.1f}",
             f"{row['p50_32']:.1f}", f"{row['p99_32']:.1f}", f"{ratio:.2f}", f"{row['recall']:.3f}", row["memory"])
    return "| " + " | ".join(cells) + " |"


def print_table(args, rows: list[dict], driver: dict[str, float]) -> None:
    print()
    print(f"{args.rows:,} x {args.dim} float32 vectors (noise {args.noise}), k={K}; {os.cpu_count()} cores, {platform.machine()}, "
          f"Python {platform.python_version()}; {args.singles} one-query and {args.batches} 32-query searches")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in rows:
        print(format_row(row, rows[0]))
    print(f"bench driver (data generation, export, Milvus client): {driver['peak']:.0f} MiB peak RSS")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker-exact":
        exact_worker(*sys.argv[2:4], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
        sys.exit(0)
    sys.exit(main())
