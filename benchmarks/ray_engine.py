"""The Ray engine against the single-machine indexer, and where its design stops scaling.

    python benchmarks/ray_engine.py engines --count 200       # local, Ray 1 actor, Ray 2 actors
    python benchmarks/ray_engine.py scale --rows 20000 100000 300000

engines: the same folder of 1 MP JPEGs and the same random-weight ViT-B-32 (no download),
indexed by whole `crossmodal index` processes into fresh databases, alternating run by run:
the local engine, then `--engine ray` with 1 and with 2 CPU encoder actors. For each it prints
wall time, images/s as the user waits for them, and the peak resident memory of the process
tree (driver, Ray's daemons and workers). Ray's fixed cost is the same comparison on a folder
of one photo.

scale: the two steps the driver does alone, measured on tables of growing size, then fitted and
extrapolated: the plan (reading every stored path, size and mtime to compare with the
listing) and the commit of one shard (a merge by path into the table). A model of N workers,
each encoding at the per-image cost measured by `engines` (or --seconds-per-image), then shows
when the single committing driver becomes the bottleneck on the way to 100M rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

WORK = Path(tempfile.gettempdir()) / "crossmodal-ray-engine"


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, dict]:
    """Wall seconds, peak resident MB of the whole process tree, and the --json report."""
    from index_throughput import tree_rss

    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], tree_rss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}:\n{stderr[-3000:]}")
    return wall, peak[0] / 2**20, json.loads(stdout)


def model_folder() -> Path:
    from cli_search import make_model

    folder = WORK / "vit-b-32-random"
    if not (folder / "open_clip_config.json").exists():
        make_model(folder)
    return folder


def engines(args: argparse.Namespace) -> None:
    from index_throughput import photo_folder

    model = model_folder()
    folder = photo_folder(1152, 864, args.count)
    single = WORK / "one-photo"
    single.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(next(iter(sorted(folder.iterdir()))), single / "only.jpg")
    env = {**os.environ, "RAY_TMPDIR": str(WORK / "ray")}
    (WORK / "ray").mkdir(exist_ok=True)
    variants = {
        "local": [],
        "ray, 1 actor": ["--engine", "ray", "--actors", "1"],
        "ray, 2 actors": ["--engine", "ray", "--actors", "2"],
    }
    results: dict[str, list[tuple[float, float, dict]]] = {name: [] for name in variants}
    fixed: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(args.runs):
        for name, extra in variants.items():
            for photos, into in ((folder, results), (single, None)):
                db = WORK / "db"
                shutil.rmtree(db, ignore_errors=True)
                command = [sys.executable, "-m", "crossmodal", "index", str(photos), "--db"]
                command += [str(db), "--model", str(model), "--json", *extra]
                wall, peak, report = run_measured(command, env)
                if into is None:
                    fixed[name].append(wall)
                else:
                    into[name].append((wall, peak, report))
                print(f"run {run + 1} {name:14} {photos.name:16} {wall:6.1f} s", flush=True)
    local_rate = None
    print(f"\n{args.count} JPEGs of 1152x864, random ViT-B-32, whole processes, 2 CPU cores")
    print(
        f"{'engine':16} {'wall s':>8} {'img/s':>7} {'x local':>8} {'peak MB':>8} {'1 photo s':>10}"
    )
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        rate = args.count / wall
        local_rate = local_rate or rate
        peak = max(r[1] for r in runs)
        one = statistics.median(fixed[name])
        print(f"{name:16} {wall:8.1f} {rate:7.2f} {rate / local_rate:8.2f} {peak:8.0f} {one:10.1f}")
    print(
        f"Ray's fixed cost (1 photo, Ray minus local): "
        f"{statistics.median(fixed['ray, 1 actor']) - statistics.median(fixed['local']):.1f} s"
    )
    steady = statistics.median(r[0] for r in results["ray, 1 actor"]) - statistics.median(
        fixed["ray, 1 actor"]
    )
    print(f"per-image cost of one CPU actor past the fixed cost: {steady / args.count:.3f} s")


def scale(args: argparse.Namespace) -> None:
    import psutil
    from search_latency import IDENTITY, Vectors, synthetic_rows

    from crossmodal.store import Store

    plan_times, commit_times, plan_memory = [], [], []
    vectors = Vectors("clustered", 100)
    for rows in args.rows:
        db = WORK / f"scale-{rows}"
        shutil.rmtree(db, ignore_errors=True)
        table = Store.open(db, create=True).images(IDENTITY, create=True)
        for start in range(0, rows, 50_000):
            count = min(50_000, rows - start)
            table.append(synthetic_rows(start, count), vectors.sample(count, start))
        table.maintain_index()  # the path index a merge by path uses
        before = psutil.Process().memory_info().rss
        started = time.perf_counter()
        stored = table.stored_files()
        plan = time.perf_counter() - started
        held = (psutil.Process().memory_info().rss - before) / 2**20
        assert len(stored) == rows
        del stored
        shard = args.shard_rows
        seconds = []
        for attempt in range(3):  # new rows: what a shard of a first run adds
            first = rows + attempt * shard
            started = time.perf_counter()
            table.upsert(synthetic_rows(first, shard), vectors.sample(shard, first))
            seconds.append(time.perf_counter() - started)
        commit = statistics.median(seconds)
        plan_times.append(plan)
        commit_times.append(commit)
        print(
            f"{rows:>9} rows: plan read {plan:6.2f} s holding {held:6.0f} MB, "
            f"commit of {shard} rows {commit:6.3f} s"
        )
        plan_memory.append(held)
        shutil.rmtree(db, ignore_errors=True)
    sizes = np.array(args.rows, float)
    plan_fit = np.polyfit(sizes, plan_times, 1)
    memory_fit = np.polyfit(sizes, plan_memory, 1)
    print(
        f"fit: plan {plan_fit[1]:.2f} s + {plan_fit[0] * 1e6:.2f} s and "
        f"{memory_fit[0] * 1e6:.0f} MB per 1M rows; commits "
        f"{min(commit_times):.3f}-{max(commit_times):.3f} s, not growing with the table"
    )
    target = 100_000_000
    print(
        f"extrapolated to {target:,} rows: plan {np.polyval(plan_fit, target):.0f} s holding "
        f"{np.polyval(memory_fit, target) / 1024:.0f} GB on the driver"
    )
    cost = args.seconds_per_image
    shards = target // args.shard_rows
    commit_total = shards * max(commit_times)  # the slowest measured: no growth was seen
    print(f"\nmodel: {target:,} images, {cost:.3f} s per image per worker, "
          f"shards of {args.shard_rows}, one driver committing")  # fmt: skip
    print(f"{'workers':>8} {'encode h':>9} {'commit h':>9} {'bound by':>9}")
    for workers in (1, 10, 100, 1000):
        encode = target * cost / workers
        bound = "commits" if commit_total > encode else "workers"
        print(f"{workers:8} {encode / 3600:9.1f} {commit_total / 3600:9.1f} {bound:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("engines")
    one.add_argument("--count", type=int, default=200)
    one.add_argument("--runs", type=int, default=1)
    two = sub.add_parser("scale")
    two.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000, 300_000])
    two.add_argument("--shard-rows", type=int, default=2048)
    two.add_argument(
        "--seconds-per-image", type=float, default=0.1, help="per worker (from `engines`)"
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    engines(args) if args.what == "engines" else scale(args)


if __name__ == "__main__":
    main()
