"""Index throughput: crossmodal's streaming pipeline against the naive way, side by side.

The naive reference is what common tools do: PIL decodes each photo in full, open_clip's own
preprocess resizes it, an fp32 model encodes batches. Both sides use the same model and images.

    python benchmarks/index_throughput.py throughput --size 4000x3000 --count 64
    python benchmarks/index_throughput.py throughput --size 1024x768 --count 512
    python benchmarks/index_throughput.py memory --size 640x480 --counts 2000 20000
    python benchmarks/index_throughput.py agreement --count 300
    python benchmarks/index_throughput.py throughput --engine int8 --size 4000x3000 --count 96
    python benchmarks/index_throughput.py throughput --device cuda --decoders threads encoder \
        --ceiling --batch-size 256 --size 4000x3000 --count 512     # on a GPU: nvJPEG or not

Without --model it builds ViT-B-32 with random weights (the compute of the real one; no download).
torch is imported inside functions: worker processes re-import this file and must stay light.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CACHE = Path(
    os.environ.get(
        "CROSSMODAL_BENCH_CACHE", Path(tempfile.gettempdir()) / "crossmodal-index-throughput"
    )
)
QUALITY = 90


# --- photo-like test images ------------------------------------------------------------------


def photo(seed: int, width: int, height: int) -> Image.Image:
    """Smooth colour fields, soft shapes and sensor grain: compresses like a photo, not a flat fill."""
    rng = np.random.default_rng(seed)
    small = (max(8, width // 4), max(8, height // 4))
    base = Image.fromarray(rng.integers(0, 256, (4, 5, 3), np.uint8)).resize(small, Image.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(int(rng.integers(6, 14))):
        x, y = rng.integers(0, small[0]), rng.integers(0, small[1])
        r = int(rng.integers(small[1] // 12, small[1] // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [x - r, y - r, x + r, y + int(r * rng.uniform(0.3, 1.5))]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    base = base.filter(ImageFilter.GaussianBlur(2)).resize((width, height), Image.BICUBIC)
    grain = rng.normal(0, 5, (height, width, 1)).astype(np.int16)
    pixels = np.clip(np.asarray(base, np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _write_photo(args: tuple[int, int, int, str]) -> None:
    seed, width, height, path = args
    photo(seed, width, height).save(path, quality=QUALITY)


def photo_folder(width: int, height: int, count: int, unique: int | None = None) -> Path:
    """A folder of exactly `count` photos, hard links into a cached pool generated once.

    `unique`: generate only that many pictures and make the rest copies of them, each with its
    own comment segment, so that every file has other bytes (a hash of its own) and decodes
    to the same pixels: thousands of 12 MP photos for a GPU in seconds instead of minutes.
    """
    drawn = min(count, unique or count)
    pool = CACHE / f"pool-{width}x{height}-q{QUALITY}"
    pool.mkdir(parents=True, exist_ok=True)
    missing = [
        (i, width, height, str(pool / f"{i:06}.jpg"))
        for i in range(drawn)
        if not (pool / f"{i:06}.jpg").exists()
    ]
    if missing:
        print(f"generating {len(missing)} {width}x{height} photos in {pool} ...", flush=True)
        with ProcessPoolExecutor() as executor:
            list(executor.map(_write_photo, missing, chunksize=8))
    sources = [pool / f"{i:06}.jpg" for i in range(drawn)]
    for i in range(drawn, count):
        copy = pool / f"{i:06}-copy-of-{i % drawn:06}.jpg"
        sources.append(copy)
        if not copy.exists():
            data = (pool / f"{i % drawn:06}.jpg").read_bytes()
            comment = f"copy {i}".encode()
            segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
            copy.write_bytes(data[:2] + segment + data[2:])  # after the start-of-image marker
    folder = CACHE / (f"run-{width}x{height}-n{count}" + (f"-u{drawn}" if drawn < count else ""))
    folder.mkdir(exist_ok=True)
    for i, source in enumerate(sources):
        link = folder / f"{i:06}.jpg"
        if not link.exists():
            os.link(source, link)
    return folder


# --- the model -----------------------------------------------------------------------------------


def model_spec(requested: str | None) -> str:
    """The model to benchmark: the one asked for, else a random-weight ViT-B-32 saved locally."""
    if requested:
        return requested
    path = CACHE / "models" / "ViT-B-32-random"
    if not (path / "open_clip_model.safetensors").exists():
        import open_clip

        from crossmodal.model.encoder import create_model_from_config, save_model_dir

        config = open_clip.get_model_config("ViT-B-32")
        save_model_dir(create_model_from_config(config, seed=0), config, path)
    return str(path)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}"


# --- the two pipelines ---------------------------------------------------------------------------


class Naive:
    """PIL full decode + open_clip preprocess + fp32 model, batched: the reference."""

    def __init__(self, spec: str, device: str) -> None:
        import open_clip

        from crossmodal.model.specs import parse_model_spec

        parsed = parse_model_spec(spec)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            parsed.open_clip_name, pretrained=parsed.open_clip_pretrained, device=device
        )
        self.model.eval()
        self.device = device

    def run(self, folder: Path, batch_size: int) -> int:
        import torch

        paths = sorted(folder.glob("*.jpg"))
        for start in range(0, len(paths), batch_size):
            batch = [
                self.preprocess(Image.open(p).convert("RGB"))
                for p in paths[start : start + batch_size]
            ]
            with torch.no_grad():
                features = self.model.encode_image(torch.stack(batch).to(self.device))
                torch.nn.functional.normalize(features, dim=-1).cpu()
        return len(paths)


def ours(
    encoder: Any, folder: Path, batch_size: int, workers: int | None, decoder: str = "auto"
) -> int:
    """crossmodal's index_folder into a fresh LanceDB table: discovery to stored rows."""
    from crossmodal.indexing import IndexConfig, index_folder
    from crossmodal.store import Store

    config = IndexConfig(batch_size, workers=workers, decoder=decoder)
    with tempfile.TemporaryDirectory() as db:
        store = Store.open(Path(db) / "db", create=True)
        report = index_folder(folder, store, encoder, config)
    if report.failed:
        raise SystemExit(f"{len(report.failed)} files failed: {report.failed[:3]}")
    return report.encoded


def warm_up(naive: Naive, encoder: Any) -> None:
    """The first forward pass builds kernels, and the first run imports LanceDB: keep both out
    of the timings."""
    import torch

    from crossmodal.store.importing import import_lancedb

    import_lancedb()

    side = encoder.pixel_recipe.size[0]
    with torch.no_grad():
        naive.model.encode_image(torch.zeros(2, 3, side, side, device=naive.device))
    encoder.encode_pixels(np.zeros((2, side, side, 3), np.uint8))


def int8_export(encoder: Any, folder: Path, batch_size: int) -> Any:
    """The model's int8 image export, as `crossmodal index` makes it (checked on 64 of the
    folder's photos, kept in the cache), opened as the encoder to time. When that check refuses
    it (random weights crowd rankings together, so their top-10 is fragile), one made without
    the bars is timed instead, and what it measured is printed."""
    from crossmodal.indexing.pipeline import sample_pixels
    from crossmodal.model.image_export import ensure_image_export, unfit_reason
    from crossmodal.model.image_onnx import OnnxImageEncoder
    from crossmodal.model.onnx_files import MANIFEST

    probes = sample_pixels(sorted(str(p) for p in folder.glob("*.jpg"))[:64], encoder.pixel_recipe)
    exported = ensure_image_export(encoder, probes)
    if exported is None:
        print(f"the int8 check refused this export: {unfit_reason(encoder) or 'too few photos'}")
        exported = unchecked_export(encoder, probes, CACHE / "int8-unchecked")
        agreement = json.loads((exported / MANIFEST).read_text())["agreement_with_torch_fp32"]
        print(f"timing one made without the bars, which `crossmodal index` would not use for "
              f"this model; its agreement with torch fp32: {agreement}")  # fmt: skip
    return OnnxImageEncoder.open(exported, encoder.identity, batch_size)


def unchecked_export(encoder: Any, probes: np.ndarray, root: Path) -> Path:
    """The int8 export of `encoder` under `root`, made once without the agreement bars (its
    figures are still measured, in its export.json): for timing whatever it agrees to."""
    from crossmodal.model.image_export import export_image_encoder
    from crossmodal.model.image_onnx import FORMAT, export_folder
    from crossmodal.model.onnx_files import export_settled

    folder = export_folder(encoder.identity.fingerprint, root)
    if not export_settled(folder, FORMAT):
        export_image_encoder(encoder, probes, root, bars=(0.0, 0.0))
    return folder


def throughput(args: argparse.Namespace) -> None:
    from crossmodal.model.encoder import EncoderConfig, load_encoder

    width, height = args.size
    folder = photo_folder(width, height, args.count, args.unique)
    spec = model_spec(args.model)
    encoder = load_encoder(spec, EncoderConfig(args.device, args.precision, args.batch_size))
    naive = Naive(spec, encoder.device)
    if args.engine == "int8":
        encoder = int8_export(encoder, folder, args.batch_size)
    print(f"device: {encoder.device} ({device_name(encoder.device)})")
    print(f"model: {spec}; naive fp32, crossmodal {encoder.precision}; batch {args.batch_size}")
    megapixels = width * height / 1e6
    print(f"images: {args.count} JPEGs {width}x{height} ({megapixels:.1f} MP, quality {QUALITY})")
    warm_up(naive, encoder)
    if args.ceiling:
        print(f"model alone (uint8 pixels already in memory): {model_rate(encoder):.0f} img/s")
    names = ["naive"] * (not args.no_naive) + [f"crossmodal/{d}" for d in args.decoders]
    rates: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):  # alternate, so all see the same background load
        for name in names:
            started = time.perf_counter()
            if name == "naive":
                done = naive.run(folder, args.batch_size)
            else:
                decoder = name.split("/")[1]
                done = ours(encoder, folder, args.batch_size, args.workers, decoder)
            rate = done / (time.perf_counter() - started)
            rates[name].append(rate)
            print(f"  run {repeat + 1} {name:>20}: {rate:8.2f} img/s", flush=True)
    for name in names[1:]:  # each against the first
        ratios = [o / n for o, n in zip(rates[name], rates[names[0]], strict=True)]
        print(
            f"{names[0]} {statistics.median(rates[names[0]]):.2f} img/s, "
            f"{name} {statistics.median(rates[name]):.2f} img/s, "
            f"ratio {statistics.median(ratios):.2f}x (median of {len(ratios)} side-by-side "
            f"runs; each {', '.join(f'{r:.2f}x' for r in ratios)})"
        )


def model_rate(encoder: Any, batches: int = 20) -> float:
    """Images a second through the encoder alone, on pixels already decoded and sized: the
    ceiling a pipeline feeding it could reach."""
    side = encoder.pixel_recipe.size[0]
    pixels = np.random.default_rng(0).integers(
        0, 256, (encoder.batch_size, side, side, 3), np.uint8
    )
    encoder.encode_pixels(pixels)
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_pixels(pixels)  # returns numpy: each batch is waited for
    return batches * len(pixels) / (time.perf_counter() - started)


# --- memory ----------------------------------------------------------------------------------------


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants (workers, forkserver), from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    tree = {root}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(rss.get(pid, 0) for pid in tree)


def memory_run(args: argparse.Namespace) -> None:
    """One indexing run in this fresh process; prints peak tree RSS as JSON."""
    from crossmodal.model.encoder import EncoderConfig, load_encoder

    width, height = args.size
    folder = photo_folder(width, height, args.count)
    encoder = load_encoder(
        model_spec(args.model), EncoderConfig(args.device, args.precision, args.batch_size)
    )
    baseline = tree_rss(os.getpid())
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            peak[0] = max(peak[0], tree_rss(os.getpid()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    done = ours(encoder, folder, args.batch_size, args.workers)
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    result = {"count": done, "baseline_mb": baseline / 2**20, "peak_mb": peak[0] / 2**20}
    print(json.dumps(result | {"img_per_s": done / seconds, "precision": encoder.precision}))


def memory(args: argparse.Namespace) -> None:
    width, height = args.size
    for count in args.counts:  # generate up front, so runs measure indexing only
        photo_folder(width, height, count)
    results = []
    for count in args.counts:
        command = [sys.executable, __file__, "_memory-run", "--count", str(count)]
        command += ["--size", f"{width}x{height}", "--device", args.device]
        command += ["--precision", args.precision, "--batch-size", str(args.batch_size)]
        command += ["--model", args.model] if args.model else []
        command += ["--workers", str(args.workers)] if args.workers is not None else []
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        r = results[-1]
        print(
            f"{count:>6} images {width}x{height}: peak {r['peak_mb']:.0f} MB "
            f"(after model load {r['baseline_mb']:.0f} MB), {r['img_per_s']:.1f} img/s",
            flush=True,
        )
    first, last = results[0], results[-1]
    print(f"peak {last['count']} / peak {first['count']}: {last['peak_mb'] / first['peak_mb']:.3f}")


# --- agreement ---------------------------------------------------------------------------------


def agreement(args: argparse.Namespace) -> None:
    """How far bf16/fp16 and draft decoding move vectors and rankings from fp32 full decoding."""
    from crossmodal.media.images import decode_image, probe_jpeg
    from crossmodal.model.encoder import EncoderConfig, load_encoder

    spec = model_spec(args.model)
    folders = [photo_folder(1024, 768, args.count), photo_folder(4000, 3000, args.count_large)]
    paths = [p for folder in folders for p in sorted(folder.glob("*.jpg"))]
    reference = load_encoder(spec, EncoderConfig(args.device, "fp32", args.batch_size))
    fast = load_encoder(spec, EncoderConfig(args.device, args.precision, args.batch_size))
    min_side = reference.pixel_recipe.min_side
    queries = [f"a photo of {w}" for w in QUERY_WORDS]

    def encode(encoder: Any, draft: bool | None) -> np.ndarray:
        """draft None: the JPEGs decoded by the encoder on its device (nvJPEG on a GPU)."""
        if draft is None:
            jpegs = [probe_jpeg(p.read_bytes()) for p in paths]
            vectors, refused = encoder.encode_jpegs(jpegs)
            if refused:
                raise SystemExit(f"the device decoder refused {len(refused)} photos")
            return vectors
        out = []
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start : start + args.batch_size]
            images = [decode_image(p, min_side=min_side if draft else None).image for p in chunk]
            out.append(encoder.encode_images(images))
        return np.concatenate(out)

    base = encode(reference, draft=False)
    base_text = reference.encode_texts(queries)
    print(
        f"model {spec}; {len(paths)} photos ({args.count} at 1024x768, {args.count_large} at 4000x3000)"
    )
    rows = [
        (f"{fast.precision}, full decode", fast, False),
        ("fp32, draft decode", reference, True),
        (f"{fast.precision}, draft decode (what torch stores)", fast, True),
        (f"{fast.precision}, decoded by the encoder (on a GPU: nvJPEG)", fast, None),
    ]
    if args.engine == "int8":
        int8 = int8_export(reference, folders[0], args.batch_size)
        rows.append(("int8 export, draft decode (what index stores)", int8, True))
    for name, encoder, draft in rows:
        vectors = encode(encoder, draft)
        # the int8 export encodes images only; texts go through the float32 text tower
        text = (reference if encoder.precision == "int8" else encoder).encode_texts(queries)
        cosine = np.sum(vectors * base, axis=1)
        print(
            f"{name:>40}: cosine mean {cosine.mean():.5f} min {cosine.min():.5f}; "
            f"top-10 overlap text {top_k_overlap(base_text, base, text, vectors):.3f}, "
            f"image {top_k_overlap(base, base, vectors, vectors, skip_self=True):.3f}; "
            f"same first hit {first_hit_agreement(base_text, base, text, vectors):.3f}"
        )


QUERY_WORDS = (
    "a dog", "a cat", "a beach", "a mountain", "a city street", "a birthday party", "a forest",
    "a sunset", "a car", "a boat", "snow", "a bridge", "a portrait", "a wedding", "food",
    "flowers", "a river", "a bicycle", "a train", "a church",
)  # fmt: skip


def _ranked(queries: np.ndarray, items: np.ndarray, k: int, skip_self: bool) -> np.ndarray:
    scores = queries @ items.T
    if skip_self:
        np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1)[:, :k]


def top_k_overlap(
    q0: np.ndarray, x0: np.ndarray, q1: np.ndarray, x1: np.ndarray, k: int = 10, skip_self=False
) -> float:
    a, b = _ranked(q0, x0, k, skip_self), _ranked(q1, x1, k, skip_self)
    return float(np.mean([len(set(r) & set(s)) / k for r, s in zip(a, b, strict=True)]))


def first_hit_agreement(q0: np.ndarray, x0: np.ndarray, q1: np.ndarray, x1: np.ndarray) -> float:
    return float(np.mean(_ranked(q0, x0, 1, False)[:, 0] == _ranked(q1, x1, 1, False)[:, 0]))


# --- command line ----------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("throughput", "memory", "_memory-run", "agreement"):
        sub = commands.add_parser(name)
        sub.add_argument("--model", help="a model spec; default: random-weight ViT-B-32")
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
        sub.add_argument("--precision", default="auto", help="crossmodal's: auto, fp32, bf16, fp16")
        sub.add_argument(
            "--engine", choices=["torch", "int8"], default="torch",
            help="crossmodal's encoder: torch, or the int8 ONNX export `index` uses on a CPU",
        )  # fmt: skip
        sub.add_argument("--batch-size", type=int, default=64)
        sub.add_argument("--workers", type=int, default=None, help="decoding processes")
        sub.add_argument("--size", type=_size, default=(4000, 3000), help="WIDTHxHEIGHT")
        if name in ("throughput", "_memory-run", "agreement"):
            sub.add_argument("--count", type=int, default=64)
        if name == "throughput":
            sub.add_argument("--repeats", type=int, default=2)
            sub.add_argument(
                "--decoders", nargs="+", choices=["auto", "threads", "encoder"], default=["auto"],
                help="crossmodal runs, one per JPEG decoder (encoder: nvJPEG on a GPU)",
            )  # fmt: skip
            sub.add_argument("--ceiling", action="store_true", help="time the model alone too")
            sub.add_argument("--no-naive", action="store_true", help="crossmodal's runs only")
            sub.add_argument(
                "--unique", type=int, default=None,
                help="distinct pictures to draw; the rest are copies with bytes of their own",
            )  # fmt: skip
        if name == "memory":
            sub.add_argument("--counts", type=int, nargs="+", default=[2000, 20000])
        if name == "agreement":
            sub.add_argument("--count-large", type=int, default=32)
    args = parser.parse_args()
    {
        "throughput": throughput,
        "memory": memory,
        "_memory-run": memory_run,
        "agreement": agreement,
    }[args.command](args)


if __name__ == "__main__":
    main()
