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
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from index_throughput import model_spec, photo_folder  # noqa: E402


def run(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident MB, stdout of one fresh process."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return wall, int(done.stderr.strip().splitlines()[-1]) / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model spec; default: random-weight ViT-B-32")
    parser.add_argument("--folders", nargs="+", default=["4000x3000:120", "1024x1024:300"])
    parser.add_argument("--runs", type=int, default=2)
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
                for name, engine_env in engines.items():
                    db = work / f"{size}-{count}-{name}-{run_index}.db"
                    wall, peak, stdout = run([*cli, str(folder), "--db", str(db),
                                              "--model", spec], engine_env)  # fmt: skip
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
                print(f"{count} x {size}, {name:5}: {statistics.median(rates):.2f} img/s whole "
                      f"process (range {min(rates):.2f}-{max(rates):.2f}), printed "
                      f"{statistics.median(entry['printed']):.1f} img/s, "
                      f"peak {statistics.median(entry['peak']):.0f} MB", flush=True)  # fmt: skip
        print(f"machine load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
