"""Adding photos to a big table, and re-planning one with nothing to do (issue 16, item 5).

    python benchmarks/big_table.py --rows 1000000 --photos 1000 --runs 2

Builds a table of `--rows` synthetic rows for the shipped model (its 64-d vectors, the full row
schema, the ANN and scalar indexes a table that size gets), then, alternating run by run, indexes
the same folder of `--photos` sample PNGs into a copy of it and into an empty database with the
library's `index_folder`, so both sides pay the same decoding and encoding. Prints the per-photo
time of each side and their ratio, split into the index run and the upkeep (`maintain_index`)
that follows it. Then times the plan of an unchanged run at that size: reading the stored rows
and comparing them with a listing of the same paths (the walk of a real folder is timed on
--walk-files empty files and scaled, because a million files do not fit this machine's disk
budget).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

WORK = Path(tempfile.gettempdir()) / "crossmodal-big-table"


def build(db: Path, rows: int, encoder) -> None:  # type: ignore[no-untyped-def]
    from search_latency import synthetic_rows

    from crossmodal.store import Store

    store = Store.open(db, create=True)
    if "images" in store.table_names() and store.info("images").rows == rows:
        return
    store.drop("images")
    table = store.images(encoder.identity, create=True)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in range(0, rows, 100_000):
        count = min(100_000, rows - start)
        vectors = rng.standard_normal((count, encoder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        table.append(synthetic_rows(start, count), vectors)
    table.maintain_index()  # the ANN index, the path index: what a table this size has
    print(f"built {rows:,} rows in {time.perf_counter() - started:.0f} s: {table.index_state()}")


def timed_index(folder: Path, db: Path, encoder) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Seconds of the index run proper and of the upkeep after it."""
    from crossmodal.indexing import IndexConfig, index_folder
    from crossmodal.store import Store

    store = Store.open(db, create=True)
    started = time.perf_counter()
    report = index_folder(folder, store, encoder, IndexConfig(maintain=False))
    run = time.perf_counter() - started
    assert report.new == len(list(folder.glob("*.png"))), report
    started = time.perf_counter()
    store.images(encoder.identity).maintain_index()
    return run, time.perf_counter() - started


def planning(db: Path, rows: int, walk_files: int, encoder) -> None:  # type: ignore[no-untyped-def]
    from search_latency import synthetic_rows

    from crossmodal.media.files import ImageFile, discover
    from crossmodal.store import Store

    table = Store.open(db).images(encoder.identity)
    started = time.perf_counter()
    stored = table.stored_files()
    read = time.perf_counter() - started
    listing = [ImageFile(r.path, r.size, r.mtime_ns) for r in synthetic_rows(0, rows)]
    started = time.perf_counter()
    todo = [f for f in listing if stored.get(f.path, (None, None))[:2] != (f.size, f.mtime_ns)]
    compare = time.perf_counter() - started
    folder = WORK / "walk"
    if not folder.exists():
        for i in range(walk_files):
            sub = folder / f"f{i // 1000:04d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"img_{i:07d}.jpg").touch()
    started = time.perf_counter()
    found = discover(folder)
    walk = (time.perf_counter() - started) * rows / len(found.files)
    print(
        f"plan of an unchanged {rows:,}-row run: read stored rows {read:.1f} s + compare "
        f"{compare:.1f} s ({len(todo)} to do) + walk {walk:.1f} s (scaled from "
        f"{len(found.files):,} files) = {read + compare + walk:.1f} s (target <= 30 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--walk-files", type=int, default=100_000)
    args = parser.parse_args()

    from crossmodal.evaluate.synthetic import write_sample
    from crossmodal.model.encoder import EncoderConfig, load_encoder

    WORK.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder("shapes-tiny", EncoderConfig(device="cpu"))
    big = WORK / f"big-{args.rows}.db"
    build(big, args.rows, encoder)
    folder = WORK / f"photos-{args.photos}"
    if not folder.exists():
        write_sample(folder, args.photos, 7)
    timed_index(folder, WORK / "warm.db", encoder)  # first-use costs out of the figures
    shutil.rmtree(WORK / "warm.db")
    figures: dict[str, list[tuple[float, float]]] = {"empty": [], "big": []}
    for run in range(args.runs):
        for side in ("empty", "big"):
            db = WORK / f"run-{side}.db"
            shutil.rmtree(db, ignore_errors=True)
            if side == "big":
                shutil.copytree(big, db)
            figures[side].append(timed_index(folder, db, encoder))
            print(f"run {run + 1} {side:5}: index {figures[side][-1][0]:.2f} s, upkeep "
                  f"{figures[side][-1][1]:.2f} s", flush=True)  # fmt: skip
            shutil.rmtree(db)
    per = {
        side: (
            statistics.median(r[0] for r in runs) / args.photos * 1000,
            statistics.median(r[0] + r[1] for r in runs) / args.photos * 1000,
        )
        for side, runs in figures.items()
    }
    print(f"\n{args.photos} photos, shapes-tiny on CPU, medians of {args.runs} alternating runs")
    print(f"{'into':24} {'ms/photo (run)':>15} {'with upkeep':>12}")
    print(f"{'an empty table':24} {per['empty'][0]:15.2f} {per['empty'][1]:12.2f}")
    print(f"{f'a {args.rows:,}-row table':24} {per['big'][0]:15.2f} {per['big'][1]:12.2f}")
    print(
        f"ratio (target <= 1.2): {per['big'][0] / per['empty'][0]:.2f} for the run, "
        f"{per['big'][1] / per['empty'][1]:.2f} with upkeep"
    )
    fold(big, folder, args.rows, encoder)
    planning(big, args.rows, args.walk_files, encoder)


def fold(big: Path, folder: Path, rows: int, encoder) -> None:  # type: ignore[no-untyped-def]
    """What the deferred upkeep costs when it comes: a forced fold after one run."""
    from crossmodal.store import IndexPolicy, Store

    db = WORK / "fold.db"
    shutil.rmtree(db, ignore_errors=True)
    shutil.copytree(big, db)
    timed_index(folder, db, encoder)
    table = Store.open(db).images(encoder.identity)
    started = time.perf_counter()
    table.maintain_index(force=True)
    seconds = time.perf_counter() - started
    every = IndexPolicy().fold_fraction * rows
    print(
        f"a fold into the {rows:,}-row indexes: {seconds:.2f} s, due every {every:,.0f} new "
        f"rows: {seconds / every * 1000:.2f} ms per photo amortised"
    )
    shutil.rmtree(db)


if __name__ == "__main__":
    main()
