"""Recall against latency for LanceDB's index kinds at a million rows (issue 16, item 4).

    python benchmarks/ann_pareto.py --rows 1000000 --kinds IVF_SQ IVF_PQ IVF_RQ IVF_HNSW_SQ

One table of `--rows` synthetic 512-d rows (search_latency's "clustered" vectors: a shared
direction, topics, a 64-d latent space; its photo-like "soft" ones, with blurred topics; or
"uniform"), written through crossmodal.store and compacted as `crossmodal optimize` leaves a
table. Queries are drawn like the rows, or off their cone as a text tower's are (`--text`). For
each index kind it builds the index (timed), then for each probe count and
refine factor measures, over the same queries, top-10 latency p50/p95 and recall@10 against exact
search computed in numpy:
- unfiltered;
- a filter keeping 1 % of the rows (10 of 1,000 folders: `folder IN (...)`, prefiltered);
- the same share as one range of paths (10 neighbouring folders);
- one folder (0.1 %), the condition `crossmodal search --folder /bench/f0100` sends;
- a filter keeping 50 % (a range on `path`, standing in for a date range: the synthetic rows
  share one date).
Every query, filtered or not, runs through the store's own search (`ImageTable._nearest`, on
Lance's scanner, fetching only the names). Filters go through the scalar indexes the store
builds (`upkeep.build_scalar_indexes`, timed apart from the vector index): exact over the rows
kept when they are few, else with more partitions probed the fewer rows are kept, and more
again when the first answer holds fewer than 10 rows. The probe count in a line is the
unfiltered one the filtered count is derived from. Then queries/s from 4 client threads at the
default settings. One line per point; pick the Pareto front from them. Machine load is printed
with each kind. `--partition-rows` sets the partitions' size (default the store's 4,096).
`--filter-strategies` instead times the store's filtered search before and after it was
reworked, `--store-paths` the search with the rows' columns on LanceDB's query builder (the
store until 2026-12-04) and on Lance's scanner, and `--query-apis` the two APIs bare.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import threading
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
from search_latency import CHUNK, IDENTITY, Vectors, build_table, exact_top10

from crossmodal.store import ImageTable, Store, upkeep
from crossmodal.store.filters import Filters
from crossmodal.store.records import ImageRow, IndexPolicy
from crossmodal.store.where import where_clause

ROW_COLUMNS = [f.name for f in fields(ImageRow)]
FILTERS = {
    "none": (None, lambda i: np.ones_like(i, bool)),
    "1%": (
        "folder IN (" + ", ".join(f"'/bench/f{f:04d}'" for f in range(0, 1000, 100)) + ")",
        lambda i: (i // 1000) % 100 == 0,
    ),
    "50%": ("path < '/bench/f0500/'", lambda i: i < 500_000),
    "1% range": (
        "path >= '/bench/f0100/' AND path < '/bench/f0110/'",
        lambda i: (i >= 100_000) & (i < 110_000),
    ),
    "folder": (where_clause(Filters(folder="/bench/f0100")), lambda i: i // 1000 == 100),
}


def exact_filtered(rows: int, vectors: Vectors, queries: np.ndarray, keep) -> np.ndarray:  # type: ignore[no-untyped-def]
    best_scores = np.full((len(queries), 10), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 10), np.int64)
    for start in range(0, rows, CHUNK):
        count = min(CHUNK, rows - start)
        ids = np.arange(start, start + count)
        mask = keep(ids)
        if not mask.any():
            continue
        sims = queries @ vectors.sample(count, seed=1 + start)[mask].T
        scores = np.concatenate([best_scores, sims], axis=1)
        all_ids = np.concatenate([best_ids, ids[mask][None].repeat(len(queries), 0)], axis=1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        best_scores = np.take_along_axis(scores, top, 1)
        best_ids = np.take_along_axis(all_ids, top, 1)
    return best_ids


STORE_TABLES: dict[tuple[int, int], ImageTable] = {}  # per (probes, refine): the store's search


def store_table(path: Path, nprobes: int, refine: int) -> ImageTable:
    key = (nprobes, refine)
    if key not in STORE_TABLES:
        policy = IndexPolicy(nprobes=nprobes, refine_factor=refine)
        STORE_TABLES[key] = Store.open(path, policy=policy).images(IDENTITY)
    return STORE_TABLES[key]


def search(table, query, where, nprobes, refine):  # type: ignore[no-untyped-def]
    """This point's query, run by the store's own search (`ImageTable._nearest`, which plans
    the filter and remembers its count per table version), fetching only the names."""
    filters = Filters(sql=where) if where else None
    found = STORE_TABLES[nprobes, refine]._nearest(query, 10, filters, ["name"])
    return found.column("name").to_pylist()


def plan_cost(table, where, nprobes) -> float:  # type: ignore[no-untyped-def]
    """Milliseconds to decide how a filter runs (counting the rows it keeps), median of 5: what
    the first search with a new filter, or after a write, pays on top."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        upkeep.filter_reach(table, where, IndexPolicy(nprobes=nprobes))
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(table, queries, truth, where, nprobes, refine) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    for query in queries[:3]:
        search(table, query, where, nprobes, refine)
    times, recalls = [], []
    for query, expected in zip(queries, truth, strict=True):
        started = time.perf_counter()
        names = search(table, query, where, nprobes, refine)
        times.append((time.perf_counter() - started) * 1000)
        found = {int(n[4:11]) for n in names}
        recalls.append(len(found & set(expected.tolist())) / 10)
    return (
        float(np.percentile(times, 50)),
        float(np.percentile(times, 95)),
        float(statistics.mean(recalls)),
    )


def throughput(table, queries, nprobes, refine, clients: int = 4) -> float:  # type: ignore[no-untyped-def]
    done = [0]
    lock = threading.Lock()

    def client(offset: int) -> None:
        for query in queries[offset::clients]:
            search(table, query, None, nprobes, refine)
            with lock:
                done[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.perf_counter() - started)


def compact(table) -> None:  # type: ignore[no-untyped-def]
    """Compact the table as `crossmodal optimize` leaves one (a fragment per million rows):
    `build_table` writes a fragment per 50k-row chunk, which a user's table never keeps, and
    reads across 20 fragments cost a search 2-5 ms more (BENCHMARKS.md)."""
    dataset = table.to_lance()
    if len(dataset.get_fragments()) > 1 + dataset.count_rows() // (1 << 20):
        dataset.optimize.compact_files(target_rows_per_fragment=1 << 20)
        table.checkout_latest()


def build_index(table, kind: str, rows: int, partition_rows: int) -> float:  # type: ignore[no-untyped-def]
    """Build `kind` with one partition per `partition_rows` rows, named as the store names its
    own (`vector_p<partitions>`: a filtered search plans its probes from the name)."""
    from lancedb import index

    partitions = max(1, rows // partition_rows)
    if kind.startswith("IVF_HNSW"):
        partitions = max(1, rows // 100_000)  # HNSW graphs want big partitions
    configs = {
        "IVF_FLAT": index.IvfFlat,
        "IVF_SQ": index.IvfSq,
        "IVF_RQ": functools.partial(index.IvfRq, num_bits=IndexPolicy().num_bits),
        "IVF_PQ": functools.partial(index.IvfPq, num_sub_vectors=64),
        "IVF_HNSW_SQ": index.HnswSq,
        "IVF_HNSW_PQ": functools.partial(index.HnswPq, num_sub_vectors=64),
    }
    for config in table.list_indices():
        if config.columns == ["vector"]:
            table.drop_index(config.name)
    started = time.perf_counter()
    table.create_index(
        "vector",
        config=configs[kind](distance_type="cosine", num_partitions=partitions),
        name=f"vector_p{partitions}",
    )
    return time.perf_counter() - started


Timings = dict[str, tuple[list[float], list[float]]]  # label -> (ms per query, recall@10)


def alternate(runs, queries, truth, warm: int) -> Timings:  # type: ignore[no-untyped-def]
    """Each of the two `runs` (label -> query -> names) on every query, swapping which goes
    first query by query (the second one finds warmer caches), after `warm` untimed queries."""
    figures: Timings = {label: ([], []) for label in runs}
    order = tuple(runs.items())
    for query in queries[:warm]:
        for run in runs.values():
            run(query)
    for index, (query, expected) in enumerate(zip(queries, truth, strict=True)):
        for label, run in order if index % 2 else order[::-1]:
            started = time.perf_counter()
            names = run(query)
            figures[label][0].append((time.perf_counter() - started) * 1000)
            found = {int(n[4:11]) for n in names}
            figures[label][1].append(len(found & set(expected.tolist())) / 10)
    return figures


def cells(figures: Timings) -> str:
    return " | ".join(
        f"{label} {np.percentile(t, 50):5.1f} / {np.percentile(t, 95):5.1f} ms, "
        f"recall {statistics.mean(r):.3f}"
        for label, (t, r) in figures.items()
    )


def before_and_now(title: str, before, now, queries, truths, warm: int) -> None:  # type: ignore[no-untyped-def]
    """`before(query, where)` against `now(query, where)` (each returning names) for every
    filter, alternating query by query (`alternate`), with the ratio of their medians."""
    print(f"{title}, 16 probes, refine 5, load {os.getloadavg()[0]:.1f}", flush=True)
    for name, (where, _) in FILTERS.items():
        runs = {
            "before": lambda query, where=where: before(query, where),
            "now": lambda query, where=where: now(query, where),
        }
        figures = alternate(runs, queries, truths[name], warm=warm)
        ratio = np.percentile(figures["before"][0], 50) / np.percentile(figures["now"][0], 50)
        print(f"{name:9} {cells(figures)} | before / now {ratio:.2f}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}", flush=True)


def compare_filter_strategies(table, queries, truths) -> None:  # type: ignore[no-untyped-def]
    """The store's filtered search before 2026-12-01 evening (probe every partition for any
    filter) against now (`search`), alternating query by query, at the default settings."""

    def before(query, where):  # type: ignore[no-untyped-def]
        q = table.search(query).distance_type("cosine").nprobes(16).refine_factor(5)
        if where:
            q = q.where(where, prefilter=True).maximum_nprobes(0)
        return q.select(["name"]).limit(10).to_arrow().column("name").to_pylist()

    def now(query, where):  # type: ignore[no-untyped-def]
        return search(table, query, where, 16, 5)

    before_and_now("filter strategies", before, now, queries, truths, warm=3)


def before_nearest(store: ImageTable, table, query, where):  # type: ignore[no-untyped-def]
    """The store's search as it ran until 2026-12-04: LanceDB's query builder after a checkout
    of the latest commit, every column of the row, the filter planned as now."""
    table.checkout_latest()
    policy = store.policy
    q = table.search(query).distance_type("cosine").nprobes(policy.nprobes)
    q = q.refine_factor(policy.refine_factor).select([*ROW_COLUMNS, "_distance"]).limit(10)
    if not where:
        return q.to_arrow()
    reach = store._reach(store._dataset().version, where)
    probes = upkeep.filtered_probes(reach, 10, policy)
    q = q.where(where, prefilter=True)
    q = q.bypass_vector_index() if probes is None else q.nprobes(probes)
    found = q.to_arrow()
    if probes is not None and probes < (reach.partitions or 0) and len(found) < 10:
        found = q.maximum_nprobes(0).to_arrow()
    return found


def compare_store_paths(table, queries, truths) -> None:  # type: ignore[no-untyped-def]
    """A search as the user gets it (every column of the 10 rows), the store's query through
    LanceDB's builder before 2026-12-04 against Lance's scanner now, alternating query by
    query, at the default settings, for every filter."""
    store = STORE_TABLES[16, 5]

    def before(query, where):  # type: ignore[no-untyped-def]
        return before_nearest(store, table, query, where).column("name").to_pylist()

    def now(query, where):  # type: ignore[no-untyped-def]
        hits = store.nearest(query, 10, Filters(sql=where) if where else None)
        return [row.name for row, _ in hits]

    before_and_now("store search paths", before, now, queries, truths, warm=len(queries))


def compare_query_apis(table, queries, truth, probes) -> None:  # type: ignore[no-untyped-def]
    """Unfiltered top-10 through LanceDB's query builder against pylance's `to_table(nearest=)`
    on the same dataset and index, alternating query by query: what LanceDB's Python layer costs.
    Last, the least an IVF query can do (1 probe, no refine): the floor of each API here."""
    dataset = table.to_lance()

    def through_lancedb(query, nprobes, refine):  # type: ignore[no-untyped-def]
        q = table.search(query).distance_type("cosine").nprobes(nprobes)
        q = q.refine_factor(refine) if refine else q
        return q.select(["name"]).limit(10).to_arrow().column("name").to_pylist()

    def through_pylance(query, nprobes, refine):  # type: ignore[no-untyped-def]
        nearest = {"column": "vector", "q": query, "k": 10, "nprobes": nprobes, "metric": "cosine"}
        nearest |= {"refine_factor": refine} if refine else {}
        columns = ["name", "_distance"]
        return dataset.to_table(nearest=nearest, columns=columns).column("name").to_pylist()

    print(f"query APIs, unfiltered, load {os.getloadavg()[0]:.1f}", flush=True)
    for nprobes, refine in [*((n, 5) for n in probes), (1, 0)]:
        runs = {
            "lancedb": lambda query, n=nprobes, r=refine: through_lancedb(query, n, r),
            "pylance": lambda query, n=nprobes, r=refine: through_pylance(query, n, r),
        }
        # all queries once first: every partition they probe is then in the index cache
        figures = alternate(runs, queries, truth, warm=len(queries))
        print(f"{nprobes:3} probes, refine {refine}: {cells(figures)}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--distribution", choices=["clustered", "soft", "uniform"], default="clustered"
    )
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--text", action="store_true", help="text-like queries (Vectors.text_queries)"
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["IVF_SQ", "IVF_PQ", "IVF_RQ", "IVF_HNSW_SQ"],
        choices=["IVF_FLAT", "IVF_SQ", "IVF_PQ", "IVF_RQ", "IVF_HNSW_SQ", "IVF_HNSW_PQ"],
    )
    parser.add_argument("--probes", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--refines", type=int, nargs="+", default=[0, 5])
    parser.add_argument(
        "--partition-rows",
        type=int,
        default=IndexPolicy().partition_rows,
        help="rows per IVF partition",
    )
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "crossmodal-bench"))
    parser.add_argument(
        "--filter-strategies",
        action="store_true",
        help="only compare the old and new filtered search on the table's present indexes",
    )
    parser.add_argument(
        "--store-paths",
        action="store_true",
        help="only compare the store's search before and after it moved to Lance's scanner",
    )
    parser.add_argument(
        "--query-apis",
        action="store_true",
        help="only compare LanceDB's query builder with pylance on the present index, unfiltered",
    )
    args = parser.parse_args()

    vectors = Vectors(args.distribution, topics=max(args.rows // 1000, 20))
    sample = vectors.text_queries if args.text else vectors.sample
    queries = sample(args.queries, seed=10**9)
    path = Path(args.dir) / f"pareto-{args.distribution}-{args.rows}"
    load = build_table(path, args.rows, vectors, "2.1")
    print(f"{args.rows:,} {args.distribution} rows (load {load:.0f} s)", flush=True)
    truths = {"none": exact_top10(args.rows, vectors, queries)}
    for name, (_, keep) in FILTERS.items():
        if name != "none":
            truths[name] = exact_filtered(args.rows, vectors, queries, keep)
    store = Store.open(path)
    model = store.info("images").model
    table = store.images(model)._table
    compact(table)
    for nprobes in {16, *args.probes}:
        for refine in {5, *args.refines}:
            store_table(path, nprobes, refine)
    if args.store_paths:
        compare_store_paths(table, queries, truths)
        return
    if args.query_apis:
        compare_query_apis(table, queries, truths["none"], args.probes)
        return
    if args.filter_strategies:
        upkeep.build_scalar_indexes(table)
        table.checkout_latest()
        compare_filter_strategies(table, queries, truths)
        return
    print("kind          build s  probes refine  filter   p50 ms   p95 ms  recall@10", flush=True)
    for kind in args.kinds:
        seconds = build_index(table, kind, args.rows, args.partition_rows)
        started = time.perf_counter()
        upkeep.build_scalar_indexes(table)
        scalar = time.perf_counter() - started
        table.checkout_latest()
        print(
            f"-- {kind}: built in {seconds:.0f} s (scalar indexes {scalar:.1f} s), "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        for name, (where, _) in FILTERS.items():
            if where:
                print(f"deciding how the {name} filter runs: {plan_cost(table, where, 16):.1f} ms")
        for nprobes in args.probes:
            for refine in args.refines:
                for name, (where, _) in FILTERS.items():
                    p50, p95, recall = measure(table, queries, truths[name], where, nprobes, refine)
                    print(
                        f"{kind:13} {seconds:7.0f} {nprobes:7} {refine:6}  {name:8} "
                        f"{p50:8.1f} {p95:8.1f} {recall:10.3f}",
                        flush=True,
                    )
        qps = throughput(table, np.concatenate([queries] * 4), 16, 5)
        print(f"{kind}: {qps:.0f} queries/s from 4 clients (16 probes, refine 5)", flush=True)


if __name__ == "__main__":
    main()
