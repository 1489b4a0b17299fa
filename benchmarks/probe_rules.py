"""How many IVF partitions a query must probe at a million rows, by the kind of vectors and query.

    python benchmarks/probe_rules.py --distribution soft            # photo-like vectors
    python benchmarks/probe_rules.py --distribution soft --text     # text queries off the cone
    python benchmarks/probe_rules.py --distribution clustered       # the older, easier vectors

One table of `--rows` synthetic rows (search_latency's `Vectors`), written as the store writes
them, then compacted as `crossmodal optimize` leaves a table (one fragment per million rows),
with the IVF_SQ index the store defaulted to until 2026-12-05 (one partition per 4,096 rows,
cosine) and scalar indexes. Reused when it exists. Each line is one probing rule over the same
100 queries, run on Lance's scanner as the store runs them (refine 5, names only): a fixed
probe count, or "ratio e": every partition whose centroid's cosine distance is within (1 + e)
of the nearest centroid's, between 2 and 64 (the query-aware pruning of SPANN, Chen et al.
2021). Prints the probes used, the rows they hold, p50 / p95 ms and recall@10 against exact
search in numpy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from ann_pareto import build_index, compact
from search_latency import Vectors, build_table, exact_top10

from crossmodal.store import Store, upkeep


def open_dataset(path: Path, rows: int, vectors: Vectors):  # type: ignore[no-untyped-def]
    """The benchmark's table as a Lance dataset, built, compacted and indexed if need be."""
    build_table(path, rows, vectors, "2.1")
    store = Store.open(path)
    table = store.images(store.info("images").model)._table
    compact(table)
    if not any(c.columns == ["vector"] for c in table.list_indices()):
        build_index(table, "IVF_SQ", rows, 4096)
        upkeep.build_scalar_indexes(table)
        table.checkout_latest()
    return table.to_lance()


def centroids(dataset) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """The vector index's unit centroids and the rows of each partition."""
    name = next(i["name"] for i in dataset.list_indices() if i["fields"] == ["vector"])
    array = dataset.centroids(index_name=name)
    matrix = array.flatten().to_numpy().reshape(len(array), -1)
    stats = dataset.stats.index_stats(name)["indices"][0]
    sizes = np.array([p["size"] for p in stats["partitions"]])
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True), sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--distribution", choices=["clustered", "soft", "uniform"], default="soft")
    parser.add_argument(
        "--text", action="store_true", help="text-like queries (Vectors.text_queries)"
    )
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "crossmodal-bench"))
    args = parser.parse_args()

    vectors = Vectors(args.distribution, topics=max(args.rows // 1000, 20))
    sample = vectors.text_queries if args.text else vectors.sample
    queries = sample(100, seed=10**9)
    path = Path(args.dir) / f"probes-{args.distribution}-{args.rows}"
    dataset = open_dataset(path, args.rows, vectors)
    truth = exact_top10(args.rows, vectors, queries)
    unit, sizes = centroids(dataset)
    distances = 1.0 - queries @ unit.T
    nearest_first = np.argsort(distances, axis=1)
    held = np.take_along_axis(np.broadcast_to(sizes, distances.shape), nearest_first, 1).cumsum(1)

    def search(query: np.ndarray, probes: int) -> list[str]:
        nearest = {"column": "vector", "q": query, "k": 10, "metric": "cosine"}
        nearest |= {"nprobes": int(probes), "refine_factor": 5}
        return dataset.to_table(nearest=nearest, columns=["name"]).column("name").to_pylist()

    for query in queries:  # every partition the rules probe is in the index cache afterwards
        search(query, 64)
    rules = [(f"fixed {n}", np.full(len(queries), n)) for n in (2, 4, 8, 16, 32, 64)]
    for ratio in (0.02, 0.05, 0.1, 0.2, 0.3):
        within = (distances <= distances.min(axis=1, keepdims=True) * (1 + ratio)).sum(axis=1)
        rules.append((f"ratio {ratio}", np.clip(within, 2, 64)))
    kind = f"{args.distribution}{' text' if args.text else ''} queries"
    print(f"{args.rows:,} rows, {len(sizes)} partitions, {kind}, load {os.getloadavg()[0]:.1f}")
    for label, probes in rules:
        times, recalls = [], []
        for query, expected, count in zip(queries, truth, probes, strict=True):
            started = time.perf_counter()
            names = search(query, count)
            times.append((time.perf_counter() - started) * 1000)
            found = {int(n[4:11]) for n in names}
            recalls.append(len(found & set(expected.tolist())) / 10)
        rows = held[np.arange(len(queries)), probes - 1].mean()
        print(
            f"{label:10} probes {probes.mean():5.1f} ({probes.min()}-{probes.max()}), "
            f"rows {rows:7.0f}, p50 {np.percentile(times, 50):5.1f} / p95 "
            f"{np.percentile(times, 95):5.1f} ms, recall@10 {np.mean(recalls):.3f} "
            f"(worst query {min(recalls):.1f})",
            flush=True,
        )
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
