"""Search latency, recall and index cost at scale, and the end-to-end CLI search time.

    python benchmarks/search_latency.py --rows 100000 1000000          # flat vs ANN tables
    python benchmarks/search_latency.py --cli                          # `crossmodal search` wall time

Tables hold synthetic unit 512-d vectors with the full image-row schema, built through
`crossmodal.store` as the library builds them. "clustered" vectors (the default) have the
structure real CLIP embeddings have: a shared direction, topics, and a low intrinsic dimension;
"uniform" vectors are random on the sphere, the worst case for any ANN index. Queries are
drawn from the same distribution. Recall@10 is measured against exact top-10 computed in numpy.
Prints one line per configuration; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from crossmodal.models import ModelIdentity
from crossmodal.records import ImageRow, IndexPolicy
from crossmodal.store import ImageTable, Store

DIM = 512
LATENT = 64  # intrinsic dimension of the clustered vectors
CHUNK = 50_000
IDENTITY = ModelIdentity("synthetic-512", "synthetic-512", DIM, "none")


class Vectors:
    """Deterministic synthetic embeddings, generated a chunk at a time (1M x 512 is 2 GB)."""

    def __init__(self, distribution: str, topics: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.distribution = distribution
        self.mean = _unit(rng.standard_normal(DIM))
        self.centres = rng.standard_normal((topics, LATENT))
        self.projection = rng.standard_normal((LATENT, DIM)) / np.sqrt(LATENT)

    def sample(self, count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.distribution == "uniform":
            return _unit(rng.standard_normal((count, DIM))).astype(np.float32)
        latent = self.centres[rng.integers(0, len(self.centres), count)]
        latent = latent + 0.5 * rng.standard_normal((count, LATENT)) / np.sqrt(LATENT)
        noise = 0.15 * rng.standard_normal((count, DIM)) / np.sqrt(DIM)
        return _unit(0.6 * self.mean + latent @ self.projection + noise).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _rows(start: int, count: int) -> list[ImageRow]:
    when = datetime(2020, 1, 1)
    return [
        ImageRow(
            f"/bench/f{i // 1000:04d}/img_{i:07d}.jpg",
            f"/bench/f{i // 1000:04d}",
            f"img_{i:07d}.jpg",
            ".jpg",
            4_000_000,
            0,
            f"{i:032x}",
            4000,
            3000,
            "JPEG",
            None,
            when,
            when,
        )
        for i in range(start, start + count)
    ]


def build_table(path: Path, rows: int, vectors: Vectors) -> tuple[ImageTable, float]:
    """A table of `rows` rows, written in chunks; reused when it already exists at that size."""
    store = Store.open(path, create=True, policy=IndexPolicy(min_rows=10**12))
    if "images" in store.table_names() and store.info("images").rows == rows:
        return store.images(IDENTITY), 0.0
    store.drop("images")
    table = store.images(IDENTITY, create=True)
    started = time.perf_counter()
    for start in range(0, rows, CHUNK):
        count = min(CHUNK, rows - start)
        table.append(_rows(start, count), vectors.sample(count, seed=1 + start))
    return table, time.perf_counter() - started


def exact_top10(path: Path, rows: int, vectors: Vectors, queries: np.ndarray) -> np.ndarray:
    """Row numbers of the exact 10 nearest rows per query, by blockwise matrix products."""
    best_scores = np.full((len(queries), 10), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 10), np.int64)
    for start in range(0, rows, CHUNK):
        count = min(CHUNK, rows - start)
        sims = queries @ vectors.sample(count, seed=1 + start).T
        scores = np.concatenate([best_scores, sims], axis=1)
        ids = np.concatenate(
            [best_ids, np.arange(start, start + count)[None].repeat(len(queries), 0)], axis=1
        )
        top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        best_scores = np.take_along_axis(scores, top, 1)
        best_ids = np.take_along_axis(ids, top, 1)
    return best_ids


def measure(table: ImageTable, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    for query in queries[:3]:  # warm caches: index files, the first query's setup
        table.nearest(query, 10)
    latencies, cpu, recalls = [], [], []
    for query, expected in zip(queries, truth, strict=True):
        started, cpu_started = time.perf_counter(), time.process_time()
        hits = table.nearest(query, 10)
        latencies.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        found = {int(row.name[4:11]) for row, _ in hits}
        recalls.append(len(found & set(expected.tolist())) / 10)
    latencies_ms = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(latencies_ms, 50)),
        "p95_ms": float(np.percentile(latencies_ms, 95)),
        # CPU seconds of all threads: the work itself, whatever else the machine is doing
        "cpu_ms": float(np.median(cpu) * 1000),
        "recall@10": float(statistics.mean(recalls)),
    }


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def table_benchmark(args: argparse.Namespace) -> None:
    for rows in args.rows:
        vectors = Vectors(args.distribution, topics=max(rows // 1000, 20))
        path = (
            Path(args.dir) / f"{args.distribution}-{rows}-{args.index_type}-{args.partition_rows}"
        )
        table, load_s = build_table(path, rows, vectors)
        queries = vectors.sample(args.queries, seed=10**9)
        truth = exact_top10(path, rows, vectors, queries)
        flat_queries = min(args.queries, args.flat_queries)
        size_before = disk_mb(path)
        if table.index_state().vector_index is None:
            flat = measure(table, queries[:flat_queries], truth[:flat_queries])
            print(
                f"{args.distribution} rows={rows:,} flat: p50 {flat['p50_ms']:.1f} ms, "
                f"p95 {flat['p95_ms']:.1f} ms, CPU/query {flat['cpu_ms']:.1f} ms, "
                f"recall@10 {flat['recall@10']:.3f}, "
                f"load {load_s:.0f} s, disk {size_before:.0f} MB",
                flush=True,
            )
            table.policy = IndexPolicy(
                min_rows=0, index_type=args.index_type, partition_rows=args.partition_rows
            )
            started = time.perf_counter()
            table.maintain_index()  # as `crossmodal index` does: compact, then build the indexes
            build_s = time.perf_counter() - started
            index_mb = disk_mb(path / "images.lance" / "_indices")
            print(
                f"{args.distribution} rows={rows:,} maintain_index (compact, then IVF + scalar "
                f"+ keyword indexes): {build_s:.1f} s, indexes {index_mb:.0f} MB on disk",
                flush=True,
            )
        state = table.index_state()
        for nprobes, refine in args.sweep:
            policy = IndexPolicy(nprobes=nprobes, refine_factor=refine)
            tuned = Store.open(path, policy=policy).images(IDENTITY)
            ann = measure(tuned, queries, truth)
            print(
                f"{args.distribution} rows={rows:,} {state.vector_index} "
                f"({state.partitions} partitions) nprobes={nprobes} refine={refine}: "
                f"p50 {ann['p50_ms']:.1f} ms, p95 {ann['p95_ms']:.1f} ms, "
                f"CPU/query {ann['cpu_ms']:.1f} ms, recall@10 {ann['recall@10']:.3f}",
                flush=True,
            )


def cli_benchmark(args: argparse.Namespace) -> None:
    """Wall time of `crossmodal search` in a fresh process: imports, model load, query."""
    from PIL import Image

    from crossmodal.encoder import create_model_from_config, save_model_dir

    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }
    work = Path(tempfile.mkdtemp(prefix="crossmodal-cli-"))
    try:
        model = save_model_dir(create_model_from_config(config), config, work / "model")
        photos = work / "photos"
        photos.mkdir()
        rng = np.random.default_rng(0)
        for i in range(200):
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            Image.new("RGB", (64, 48), colour).save(photos / f"p{i:03d}.jpg")
        cli = [sys.executable, "-m", "crossmodal"]
        db = str(work / "db")
        subprocess.run(
            [*cli, "index", str(photos), "--db", db, "--model", str(model)],
            check=True,
            capture_output=True,
        )
        commands = {
            "crossmodal --help": [*cli, "--help"],
            "crossmodal search (text, tiny model)": [*cli, "search", "a red photo", "--db", db],
            "crossmodal search (composed + filter)": [
                *cli,
                "search",
                '"red" - 0.5*"blue"',
                "--db",
                db,
                "--type",
                "jpg",
                "--min-score",
                "-1",
            ],
        }
        for name, command in commands.items():
            times = []
            for _ in range(args.cli_runs):
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times.append(time.perf_counter() - started)
            print(
                f"{name}: median {statistics.median(times):.2f} s over {len(times)} runs "
                f"(min {min(times):.2f} s)",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--distribution", choices=["clustered", "uniform"], default="clustered")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--partition-rows", type=int, default=IndexPolicy().partition_rows)
    parser.add_argument("--index-type", default="IVF_SQ", choices=["IVF_SQ", "IVF_RQ", "IVF_PQ"])
    parser.add_argument("--flat-queries", type=int, default=30)
    parser.add_argument(
        "--sweep",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        nargs="*",
        default=[(8, 5), (16, 5), (32, 5), (16, 10), (64, 5)],
        help="NPROBES,REFINE pairs to measure with the ANN index",
    )
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "crossmodal-bench"))
    parser.add_argument("--cli", action="store_true", help="Measure the CLI instead.")
    parser.add_argument("--cli-runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.cli:
        cli_benchmark(args)
    else:
        table_benchmark(args)


if __name__ == "__main__":
    main()
