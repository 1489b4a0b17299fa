"""Search latency, recall and index cost at scale, and the end-to-end CLI search time.

    python benchmarks/search_latency.py --rows 100000 1000000          # flat vs ANN tables
    python benchmarks/search_latency.py --rows 1000000 --compare       # and as main stored them
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
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from crossmodal.model.specs import ModelIdentity
from crossmodal.store import ImageTable, Store
from crossmodal.store import database as store_database
from crossmodal.store.records import ImageRow, IndexPolicy

DIM = 512
LATENT = 64  # intrinsic dimension of the clustered vectors
SOFT_LATENT = 128  # and of the soft ones
CHUNK = 50_000
IDENTITY = ModelIdentity("synthetic-512", "synthetic-512", DIM, "none")


class Vectors:
    """Deterministic synthetic embeddings, generated a chunk at a time (1M x 512 is 2 GB).

    - "clustered": tight topics (1 per 1,000 rows) in a 64-d latent space. Neighbours are near
      copies (top-1 cosine 0.998 at 100k rows) and topics are unrelated (mean cosine 0.01):
      far easier for an IVF index than photos are, since a topic sits in one partition.
    - "soft": closer to CLIP image embeddings: a shared direction, so that any two photos have
      cosine ~0.5 (CLIP's "cone"); 200 themes of 20 topics each, topics drawn with Zipf
      frequencies and blurred into each other; a 128-d latent space with a power-law spectrum
      (anisotropic). At 100k rows a photo's nearest neighbour has cosine ~0.93, its tenth 0.90.
    - "uniform": random on the sphere, the worst case for any ANN index.
    `text_queries` makes queries off the image cone, as CLIP's text vectors are (the modality
    gap): cosine ~0.35 with the photos they find best, ~0.15 with any photo.
    """

    def __init__(self, distribution: str, topics: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.distribution = distribution
        self.mean = _unit(rng.standard_normal(DIM))
        if distribution == "soft":
            latent, themes, per_theme = SOFT_LATENT, 200, 20
            spectrum = np.arange(1, latent + 1) ** -0.6
            self.spectrum = spectrum / np.linalg.norm(spectrum) * np.sqrt(latent)
            theme = rng.standard_normal((themes, latent)).repeat(per_theme, 0)
            self.centres = theme + 0.7 * rng.standard_normal((themes * per_theme, latent))
            self.projection = np.linalg.qr(rng.standard_normal((DIM, latent)))[0].T
            weights = 1.0 / np.arange(1, themes * per_theme + 1)
            self.frequencies = weights / weights.sum()
            return
        self.centres = rng.standard_normal((topics, LATENT))
        self.projection = rng.standard_normal((LATENT, DIM)) / np.sqrt(LATENT)

    def sample(self, count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.distribution == "uniform":
            return _unit(rng.standard_normal((count, DIM))).astype(np.float32)
        if self.distribution == "soft":
            topic = rng.choice(len(self.centres), count, p=self.frequencies)
            latent = self.centres[topic] + 0.8 * rng.standard_normal((count, SOFT_LATENT))
            content = _unit((latent * self.spectrum) @ self.projection)
            content = content + 0.05 * rng.standard_normal((count, DIM)) / np.sqrt(DIM)
            return _unit(self.mean + _unit(content)).astype(np.float32)
        latent = self.centres[rng.integers(0, len(self.centres), count)]
        latent = latent + 0.5 * rng.standard_normal((count, LATENT)) / np.sqrt(LATENT)
        noise = 0.15 * rng.standard_normal((count, DIM)) / np.sqrt(DIM)
        return _unit(0.6 * self.mean + latent @ self.projection + noise).astype(np.float32)

    def text_queries(self, count: int, seed: int) -> np.ndarray:
        """Queries as a text tower makes them: what a photo of this distribution shows, without
        the photos' shared direction, plus a direction of their own (the text side's cone)."""
        rng = np.random.default_rng(seed)
        text_side = _unit(rng.standard_normal(DIM))
        photos = self.sample(count, seed + 1).astype(np.float64)
        content = _unit(photos - (photos @ self.mean)[:, None] * self.mean)
        return _unit(2.5 * text_side + content + 0.3 * self.mean).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic_rows(start: int, count: int) -> list[ImageRow]:
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


def build_table(path: Path, rows: int, vectors: Vectors, file_format: str) -> float:
    """A table of `rows` rows in Lance file format `file_format`, written in chunks; reused
    when it already exists at that size. Returns the load time (0 when reused)."""
    previous, store_database.FILE_FORMAT = store_database.FILE_FORMAT, file_format
    try:
        store = Store.open(path, create=True, policy=IndexPolicy(min_rows=10**12))
        if "images" in store.table_names() and store.info("images").rows == rows:
            return 0.0
        store.drop("images")
        table = store.images(IDENTITY, create=True)
        started = time.perf_counter()
        for start in range(0, rows, CHUNK):
            count = min(CHUNK, rows - start)
            table.append(synthetic_rows(start, count), vectors.sample(count, seed=1 + start))
        return time.perf_counter() - started
    finally:
        store_database.FILE_FORMAT = previous


def open_table(path: Path, policy: IndexPolicy, refresh: str) -> ImageTable:
    """The image table as a search opens it. refresh "interval" reproduces main before this
    change: a connection that LanceDB refreshes before every internal read."""
    if refresh == "interval":
        import lancedb  # only to rebuild the old connection; the library opens it in the store

        connection = lancedb.connect(str(path), read_consistency_interval=timedelta(0))
        return Store(path, connection, policy).images(IDENTITY)
    return Store.open(path, policy=policy).images(IDENTITY)


def exact_top10(rows: int, vectors: Vectors, queries: np.ndarray) -> np.ndarray:
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


def measure(
    tables: dict[str, ImageTable], queries: np.ndarray, truth: np.ndarray
) -> dict[str, dict[str, float]]:
    """Latency, CPU time and recall@10 of each table, the tables taking turns query by query
    so that the load of a shared machine falls on all of them alike."""
    for table in tables.values():
        for query in queries[:3]:  # warm caches: index files, the first query's setup
            table.nearest(query, 10)
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in tables}
    for turn, (query, expected) in enumerate(zip(queries, truth, strict=True)):
        names = list(tables)
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            started, cpu_started = time.perf_counter(), time.process_time()
            hits = tables[name].nearest(query, 10)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            found = {int(row.name[4:11]) for row, _ in hits}
            samples[name].append((wall, cpu, len(found & set(expected.tolist())) / 10))
    out = {}
    for name, rows in samples.items():
        wall_ms = np.array([r[0] for r in rows]) * 1000
        out[name] = {
            "p50_ms": float(np.percentile(wall_ms, 50)),
            "p95_ms": float(np.percentile(wall_ms, 95)),
            # CPU seconds of all threads: the work itself, whatever else the machine is doing
            "cpu_ms": float(np.median([r[1] for r in rows]) * 1000),
            "recall@10": float(statistics.mean(r[2] for r in rows)),
        }
    return out


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


# (Lance file format, how a search sees other processes' commits), by name
CONFIGS = {
    "main: format 2.2, refresh interval 0": ("2.2", "interval"),
    "format 2.2, checkout per use": ("2.2", "checkout"),
    "format 2.1, checkout per use (default)": (store_database.FILE_FORMAT, "checkout"),
}


def table_benchmark(args: argparse.Namespace) -> None:
    configs = {n: c for n, c in CONFIGS.items() if args.compare or "default" in n}
    for rows in args.rows:
        vectors = Vectors(args.distribution, topics=max(rows // 1000, 20))
        queries = vectors.sample(args.queries, seed=10**9)
        paths = {}
        for file_format in sorted({c[0] for c in configs.values()}):
            path = Path(args.dir) / (
                f"{args.distribution}-{rows}-{args.index_type}-{args.partition_rows}-f{file_format}"
            )
            paths[file_format] = path
            load_s = build_table(path, rows, vectors, file_format)
            print(
                f"{args.distribution} rows={rows:,} format {file_format}: load {load_s:.0f} s, "
                f"table {disk_mb(path):.0f} MB",
                flush=True,
            )
        truth = exact_top10(rows, vectors, queries)
        flat_policy = IndexPolicy(min_rows=10**12)
        flat_tables = {
            name: open_table(paths[fmt], flat_policy, refresh)
            for name, (fmt, refresh) in configs.items()
        }
        unindexed = {
            name: table
            for name, table in flat_tables.items()
            if table.index_state().vector_index is None
        }
        if unindexed:
            count = min(args.queries, args.flat_queries)
            for name, flat in measure(unindexed, queries[:count], truth[:count]).items():
                print(
                    f"{args.distribution} rows={rows:,} {name}, flat: {_figures(flat)}", flush=True
                )
        for file_format, path in paths.items():
            table = open_table(path, flat_policy, "checkout")
            if table.index_state().vector_index is not None:
                continue
            table.policy = IndexPolicy(
                min_rows=0, index_type=args.index_type, partition_rows=args.partition_rows
            )
            started = time.perf_counter()
            table.maintain_index()  # as `crossmodal index` does: compact, then build the indexes
            print(
                f"{args.distribution} rows={rows:,} format {file_format}: maintain_index "
                f"(compact, then IVF + scalar + keyword indexes) {time.perf_counter() - started:.1f}"
                f" s, indexes {disk_mb(path / 'images.lance' / '_indices'):.0f} MB, "
                f"table {disk_mb(path):.0f} MB",
                flush=True,
            )
        for nprobes, refine in args.sweep:
            policy = IndexPolicy(nprobes=nprobes, refine_factor=refine)
            tables = {
                name: open_table(paths[fmt], policy, refresh)
                for name, (fmt, refresh) in configs.items()
            }
            state = next(iter(tables.values())).index_state()
            for name, ann in measure(tables, queries, truth).items():
                print(
                    f"{args.distribution} rows={rows:,} {name}, {state.vector_index} "
                    f"({state.partitions} partitions) nprobes={nprobes} refine={refine}: "
                    f"{_figures(ann)}",
                    flush=True,
                )


def _figures(result: dict[str, float]) -> str:
    return (
        f"p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, "
        f"CPU/query {result['cpu_ms']:.1f} ms, recall@10 {result['recall@10']:.3f}"
    )


def cli_benchmark(args: argparse.Namespace) -> None:
    """Wall time of `crossmodal search` in a fresh process: imports, model load, query."""
    from PIL import Image

    from crossmodal.model.encoder import create_model_from_config, save_model_dir

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
    parser.add_argument(
        "--distribution", choices=["clustered", "soft", "uniform"], default="clustered"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--partition-rows", type=int, default=IndexPolicy().partition_rows)
    parser.add_argument(
        "--index-type", default=IndexPolicy().index_type, choices=["IVF_SQ", "IVF_RQ", "IVF_PQ"]
    )
    parser.add_argument("--flat-queries", type=int, default=30)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="Also measure the Lance 2.2 format and main's refresh interval, side by side.",
    )
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
