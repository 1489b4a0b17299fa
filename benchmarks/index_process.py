"""`crossmodal index` as a user waits for it: whole processes, torch against the int8 export.

    python benchmarks/index_process.py                          # 120 x 12 MP and 300 x 1 MP
    python benchmarks/index_process.py --folders 4000x3000:120 --runs 3

For each folder (photo-like JPEGs from index_throughput's cached pool) and each engine, in
alternating runs: `crossmodal index FOLDER --db NEW_DB --model M` in a fresh process, timed from
the shell to its exit, with the process's peak memory from /usr/bin/time. Engines:
- torch: CROSSMODAL_NO_ONNX=1, the open_clip model (bf16 on a CPU with native bf16);
- int8: the exported image tower in ONNX Runtime, which the first run below makes.
Printed per folder and engine: images/s over the whole process (photos / wall time), the rate
the command printed (encoding only), and peak memory. Also the start-up: a one-photo folder.
The model is index_throughput's random-weight ViT-B-32 unless --model is given.

With --rclip RCLIP --rclip-datadir DIR, rclip runs in the same alternation: `rclip -t 1 PHOTO`
in the folder (it indexes the folder it runs in, then answers the query; an image query, so its
text model is not loaded), from an empty database each time. DIR must hold ONNX exports of the
same model where rclip looks for its own (rclip cannot download them offline).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cli_search import timed as run  # noqa: E402  (wall, peak MB, stdout of a process)
from index_throughput import model_spec, photo_folder  # noqa: E402


def run_rclip(rclip: str, datadir: Path, folder: Path) -> tuple[float, float, str]:
    """rclip indexing `folder` from an empty database, then one image query: one process."""
    for stale in datadir.glob("db.sqlite3*"):
        stale.unlink()
    env = {**os.environ, "RCLIP_DATADIR": str(datadir), "HF_HUB_OFFLINE": "1"}
    photo = str(sorted(folder.glob("*.jpg"))[0])
    previous = Path.cwd()
    os.chdir(folder)  # rclip indexes the folder it runs in
    try:
        return run([rclip, "-t", "1", photo], env)
    finally:
        os.chdir(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model spec; default: random-weight ViT-B-32")
    parser.add_argument("--folders", nargs="+", default=["4000x3000:120", "1024x1024:300"])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rclip", help="an rclip executable, to run side by side")
    parser.add_argument("--rclip-datadir", type=Path, help="its RCLIP_DATADIR (see above)")
    args = parser.parse_args()
    spec = model_spec(args.model)
    work = Path(tempfile.mkdtemp(prefix="crossmodal-index-process-"))
    env = {**os.environ, "CROSSMODAL_CACHE": str(work / "cache")}
    engines = {"torch": {**env, "CROSSMODAL_NO_ONNX": "1"}, "int8": env}
    cli = [sys.executable, "-m", "crossmodal", "index"]
    try:
        warm = photo_folder(640, 480, 64)  # the first run: torch, and it makes the export
        run([*cli, str(warm), "--db", str(work / "warm.db"), "--model", spec], env)
        assert list((work / "cache" / "image-encoders").glob("*/image.onnx")), "no export"
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        for item in [*args.folders, "1024x768:1"]:
            size, count = item.split(":")
            width, height = (int(v) for v in size.split("x"))
            folder = photo_folder(width, height, int(count))
            figures: dict[str, dict[str, list[float]]] = {}
            for run_index in range(args.runs):
                for name in [*engines, *(["rclip"] if args.rclip else [])]:
                    if name == "rclip":
                        wall, peak, stdout = run_rclip(args.rclip, args.rclip_datadir, folder)
                        figures.setdefault(name, {"rate": [], "printed": [], "peak": []})
                        figures[name]["rate"].append(int(count) / wall)
                        figures[name]["peak"].append(peak)
                        continue
                    db = work / f"{size}-{count}-{name}-{run_index}.db"
                    wall, peak, stdout = run([*cli, str(folder), "--db", str(db),
                                              "--model", spec], engines[name])  # fmt: skip
                    printed = re.search(r"\(([\d.]+) img/s on [^,]+, (\w+)\)", stdout)
                    entry = figures.setdefault(name, {"rate": [], "printed": [], "peak": []})
                    entry["rate"].append(int(count) / wall)
                    entry["printed"].append(float(printed.group(1)) if printed else 0.0)
                    entry["peak"].append(peak)
                    shutil.rmtree(db, ignore_errors=True)
            for name, entry in figures.items():
                rates = entry["rate"]
                if int(count) == 1:
                    walls = [1 / r for r in rates]
                    print(f"start-up, one {size} photo, {name:5}: {statistics.median(walls):.2f} s "
                          f"(range {min(walls):.2f}-{max(walls):.2f}), "
                          f"peak {statistics.median(entry['peak']):.0f} MB", flush=True)  # fmt: skip
                    continue
                printed = statistics.median(entry["printed"]) if entry["printed"] else 0.0
                print(f"{count} x {size}, {name:5}: {statistics.median(rates):.2f} img/s whole "
                      f"process (range {min(rates):.2f}-{max(rates):.2f}), printed "
                      f"{printed:.1f} img/s, "
                      f"peak {statistics.median(entry['peak']):.0f} MB", flush=True)  # fmt: skip
        print(f"machine load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
