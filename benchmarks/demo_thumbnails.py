"""How long the demo takes to show a page of results from 12-MP JPEGs: thumbnails cold and warm.

    python benchmarks/demo_thumbnails.py [--count 24]

Prints seconds for one page of gallery thumbnails made one by one, with the thread pool the
demo uses, and again from the cache; and one large preview.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from crossmodal_demo.thumbnails import GRID_SIZE, PREVIEW_SIZE, WORKERS, Thumbnails
from PIL import Image

from crossmodal.store import ImageRow


def photo(path: Path, seed: int) -> ImageRow:
    """A 4000x3000 JPEG with smooth gradients and noise: about the size of a camera file."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:3000, 0:4000].astype(np.float32)
    base = np.stack([x / 16, y / 12, (x + y) / 28], axis=-1) + rng.normal(0, 12, (3000, 4000, 3))
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path, quality=92)
    now = datetime.now()
    return ImageRow(
        str(path),
        str(path.parent),
        path.name,
        ".jpg",
        path.stat().st_size,
        0,
        f"{seed:032x}",
        4000,
        3000,
        "JPEG",
        None,
        now,
        now,
    )


def timed(func) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = [photo(folder / f"p{i}.jpg", i) for i in range(args.count)]
        size_mb = np.mean([r.size for r in rows]) / 1e6
        print(
            f"{args.count} photos 4000x3000, {size_mb:.1f} MB each; {os.cpu_count()} cores, "
            f"{WORKERS} threads"
        )
        one_by_one = Thumbnails(folder / "a")
        sequential = timed(lambda: [one_by_one.of(r, GRID_SIZE) for r in rows])
        pooled = Thumbnails(folder / "b")
        parallel = timed(lambda: pooled.of_many(rows, GRID_SIZE))
        warm = timed(lambda: pooled.of_many(rows, GRID_SIZE))
        preview = timed(lambda: pooled.of(rows[0], PREVIEW_SIZE))
        print(f"page of {args.count} thumbnails, cold, one by one : {sequential:6.2f} s")
        print(
            f"page of {args.count} thumbnails, cold, thread pool: {parallel:6.2f} s "
            f"({sequential / parallel:.1f}x)"
        )
        print(f"page of {args.count} thumbnails, warm (cached)     : {warm * 1000:6.1f} ms")
        print(f"one {PREVIEW_SIZE}px preview, cold                 : {preview:6.2f} s")


if __name__ == "__main__":
    main()
