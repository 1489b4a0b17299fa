"""A text search from the shell, as a user waits for it: ViT-B-32, a 10,000-row table, cold processes.

    python benchmarks/cli_search.py              # 5 runs of each path, side by side
    python benchmarks/cli_search.py --runs 9

Makes a random-weight ViT-B-32 model folder (the same architecture and file size as the
pretrained one: no download), indexes 64 real JPEGs with it through `crossmodal index`, and
pads the table to 10,000 rows with unit vectors through `crossmodal.store`. Then, alternating
run by run so machine load hits both alike, times `crossmodal search "a red bicycle" --db DB`
(and with --json), and `crossmodal search --image PHOTO --db DB`, in fresh processes:
- torch: CROSSMODAL_NO_ONNX=1, the full open_clip model (what every search did before);
- onnx: the exported text tower, and for the image query also the int8 image tower, that
  `crossmodal index` and the first search left in the cache.
For each it prints the median and range of wall time and each process's peak memory, then the
one-photo `index` start-up and the time until `crossmodal demo`'s page answers, and checks that
the two paths agree: the same top-10 paths, and the text vectors' cosine.
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
import time
from pathlib import Path

import numpy as np

QUERY = "a red bicycle"
ROWS = 10_000


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident MB and stdout of one fresh process.

    The peak comes from /usr/bin/time, not from this process's wait4: Linux carries a parent's
    peak into a child it forks, and this process holds a model, so its children would all
    report at least its size."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return wall, int(done.stderr.strip().splitlines()[-1]) / 1024, done.stdout


def make_model(folder: Path) -> Path:
    import open_clip
    import torch

    from crossmodal.model.encoder import save_model_dir

    torch.manual_seed(0)
    config = open_clip.get_model_config("ViT-B-32")
    model = open_clip.create_model("ViT-B-32")  # random weights, the pretrained one's shape
    return save_model_dir(model, config, folder, dict(model.visual.preprocess_cfg))


def make_photos(folder: Path, count: int = 64) -> Path:
    """Photo-like JPEGs (index_throughput's): colour fields, soft shapes, grain."""
    from index_throughput import photo

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo(i, 640, 480).save(folder / f"p{i:03d}.jpg", quality=90)
    return folder


def pad_table(db: Path, rows: int) -> None:
    """Add synthetic rows (unit vectors, full schema) until the image table holds `rows`."""
    from search_latency import synthetic_rows

    from crossmodal.store import Store

    store = Store.open(db)
    identity = store.info("images").model
    count = rows - store.info("images").rows
    vectors = np.random.default_rng(1).standard_normal((count, identity.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.images(identity).append(synthetic_rows(0, count), vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the model and table here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="crossmodal-cli-search-"))
    env = {**os.environ, "CROSSMODAL_CACHE": str(work / "cache")}
    cli = [sys.executable, "-m", "crossmodal"]
    db = work / "db"
    try:
        model = work / "vit-b-32-random"
        if not (model / "open_clip_model.safetensors").is_file():
            make_model(model)
        if not db.exists():
            started = time.perf_counter()
            subprocess.run(
                [*cli, "index", str(make_photos(work / "photos")), "--db", str(db),
                 "--model", str(model)],
                check=True, env=env, capture_output=True,
            )  # fmt: skip
            print(f"indexed 64 photos and exported the text tower in "
                  f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
            pad_table(db, ROWS)
        subprocess.run(  # nothing to index; makes the image export if an older run did not
            [*cli, "index", str(work / "photos"), "--db", str(db), "--model", str(model)],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        paths = {
            "torch": {**env, "CROSSMODAL_NO_ONNX": "1"},
            "onnx": env,
        }
        fp32 = timed(  # the export is float32: its results are compared with torch's float32
            [*cli, "search", QUERY, "--db", str(db), "--json", "--precision", "fp32"],
            paths["torch"],
        )[2]
        figures: dict[str, dict[str, list[float]]] = {}
        outputs: dict[str, str] = {}
        example = str(work / "photos" / "p005.jpg")
        queries = {
            "": [QUERY],
            " --json": [QUERY, "--json"],
            " --image": ["--image", example, "--json"],
        }
        for _ in range(args.runs):  # alternate, so load changes hit both paths alike
            for name, path_env in paths.items():
                for flag, query in queries.items():
                    key = f"{name}{flag}"
                    wall, peak, stdout = timed([*cli, "search", *query, "--db", str(db)], path_env)
                    figures.setdefault(key, {"wall": [], "peak": []})
                    figures[key]["wall"].append(wall)
                    figures[key]["peak"].append(peak)
                    outputs[key] = stdout
        for key, values in figures.items():
            print(
                f"{key:13} median {statistics.median(values['wall']):.2f} s "
                f"(range {min(values['wall']):.2f}-{max(values['wall']):.2f}), "
                f"peak memory {statistics.median(values['peak']):.0f} MB",
                flush=True,
            )
        startup(cli, model, work, env, args.runs)
        demo_ready(cli, db, env, args.runs)
        torch_top = [h["path"] for h in json.loads(fp32)]
        onnx_top = [h["path"] for h in json.loads(outputs["onnx --json"])]
        bf16_top = [h["path"] for h in json.loads(outputs["torch --json"])]
        print(f"same top-10 paths as torch fp32: {torch_top == onnx_top}; torch bf16 (the "
              f"default on this CPU) shares {len(set(bf16_top) & set(torch_top))} of 10")  # fmt: skip
        image_fp32 = timed(
            [*cli, "search", "--image", example, "--db", str(db), "--json", "--precision", "fp32"],
            paths["torch"],
        )[2]
        image_torch = [h["path"] for h in json.loads(image_fp32)]
        image_onnx = [h["path"] for h in json.loads(outputs["onnx --image"])]
        print(f"image query: the exports' top 10 share {len(set(image_onnx) & set(image_torch))} "
              f"of torch fp32's; same order: {image_onnx == image_torch}")  # fmt: skip
        print(f"machine load average after: {os.getloadavg()[0]:.2f}")
        compare_vectors(model, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def startup(cli: list[str], model: Path, work: Path, env: dict[str, str], runs: int) -> None:
    """`crossmodal index` of a one-photo folder into a new database: the whole process, from
    the shell to the photo encoded and stored, with the torch model and with the int8 image
    export (which indexing the 64 photos made)."""
    one = make_photos(work / "one-photo", count=1)
    engines = {"torch (CROSSMODAL_NO_ONNX=1)": {**env, "CROSSMODAL_NO_ONNX": "1"}, "int8": env}
    walls: dict[str, list[float]] = {name: [] for name in engines}
    peaks: dict[str, list[float]] = {name: [] for name in engines}
    for run_index in range(runs):
        for name, engine_env in engines.items():
            db = work / f"startup-{run_index}-{name[:5]}.db"
            wall, peak, _ = timed(
                [*cli, "index", str(one), "--db", str(db), "--model", str(model)], engine_env
            )
            shutil.rmtree(db, ignore_errors=True)
            walls[name].append(wall)
            peaks[name].append(peak)
    for name, values in walls.items():
        print(f"index one photo, {name}: median {statistics.median(values):.2f} s "
              f"(range {min(values):.2f}-{max(values):.2f}), "
              f"peak memory {statistics.median(peaks[name]):.0f} MB", flush=True)  # fmt: skip


def demo_ready(cli: list[str], db: Path, env: dict[str, str], runs: int) -> None:
    """`crossmodal demo --db DB` from the shell until its page answers, with the torch model and
    with the two exports."""
    import socket
    import urllib.error
    import urllib.request

    engines = {"torch (CROSSMODAL_NO_ONNX=1)": {**env, "CROSSMODAL_NO_ONNX": "1"}, "exports": env}
    walls: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine_env in engines.items():
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            started = time.perf_counter()
            demo = subprocess.Popen(
                [*cli, "demo", "--db", str(db), "--port", str(port)],
                env=engine_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                while demo.poll() is None and time.perf_counter() - started < 120:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=5):
                            break
                    except (urllib.error.URLError, ConnectionError, TimeoutError):
                        time.sleep(0.05)
                walls[name].append(time.perf_counter() - started)
            finally:
                demo.terminate()
                demo.wait(timeout=30)
    for name, values in walls.items():
        print(f"demo page answers, {name}: median {statistics.median(values):.2f} s "
              f"(range {min(values):.2f}-{max(values):.2f})", flush=True)  # fmt: skip


def compare_vectors(model: Path, work: Path) -> None:
    """Cosine between open_clip's float32 text vectors and the export's, on a few queries."""
    os.environ["CROSSMODAL_CACHE"] = str(work / "cache")
    from crossmodal.model.encoder import EncoderConfig, load_encoder
    from crossmodal.model.text_onnx import open_text_export

    texts = [QUERY, "a photo of a dog", "sunset over the harbour, long exposure", ""]
    torch_vectors = load_encoder(str(model), EncoderConfig("cpu", "fp32")).encode_texts(texts)
    exported = open_text_export(str(model))
    assert exported is not None, "no export was made"
    cosine = (exported.encode_texts(texts) * torch_vectors).sum(axis=1)
    print(f"text vectors, export against open_clip fp32: min cosine {cosine.min():.7f}")


if __name__ == "__main__":
    main()
