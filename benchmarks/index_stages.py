"""Where an indexing run's time goes: each stage alone, then whole runs, on one folder of JPEGs.

    python benchmarks/index_stages.py --device cuda --size 1024x768 --count 4096 --unique 256
    python benchmarks/index_stages.py --device cpu --size 1024x768 --count 256 --workers 2

Stages, each in images a second:
  threads, Pillow       the decoding threads alone (read, hash, decode, shrink), no encoder
  threads, JPEG header  the same threads when the encoder decodes (read, hash, read the header)
  encoder's decoding    `encode_jpegs` on bytes already in memory (nvJPEG + model on a GPU)
  model alone           `encode_pixels` on model-sized pixels already in memory
  no model              `index_folder` with an encoder that costs nothing: threads + store
  whole runs            `index_folder` with the real encoder, each decoder
  decoders alone        `index_folder` with the encoder's decoder and a free model, the threads
                        taking over JPEGs once a batch waits for it (spill on), or never (off)
`--profile` prints where the indexing thread spends a whole run with the encoder's decoder.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from index_throughput import _size, model_rate, model_spec, ours, photo_folder  # noqa: E402


class CostsNothing:
    """An encoder that answers at once with fixed unit vectors: what the rest of a run costs."""

    def __init__(self, like: Any) -> None:
        self.identity = like.identity
        self.pixel_recipe = like.pixel_recipe
        self.device = like.device
        self.precision = like.precision
        self.logit_scale = like.logit_scale
        self.batch_size = like.batch_size
        self._vector = np.eye(1, like.dim, dtype=np.float32)

    @property
    def dim(self) -> int:
        return self._vector.shape[1]

    def _vectors(self, count: int) -> np.ndarray:
        return np.repeat(self._vector, count, axis=0)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._vectors(len(pixels))

    def encode_jpegs(self, jpegs: Any) -> tuple[np.ndarray, list[int]]:
        return self._vectors(len(jpegs)), []

    def encode_images(self, images: Any) -> np.ndarray:
        return self._vectors(len(images))

    def encode_texts(self, texts: Any) -> np.ndarray:
        return self._vectors(len(texts))


class DecodesOnly(CostsNothing):
    """The encoder's JPEG decoder for real, a model that costs nothing: the decoders alone."""

    def __init__(self, like: Any) -> None:
        super().__init__(like)
        self.decoded = 0  # by the encoder's decoder; the rest by the threads

    def encode_jpegs(self, jpegs: Any) -> tuple[np.ndarray, list[int]]:
        from crossmodal.model.jpeg_decode import decode_to_pixels

        pixels, refused = decode_to_pixels(jpegs, self.pixel_recipe, self.device)
        self.decoded += len(pixels)
        return self._vectors(len(pixels)), refused


def spill(encoder: Any, folder: Path, batch_size: int, workers: int | None, on: bool) -> str:
    """A run with the encoder's decoder and a free model, the threads taking over JPEGs past a
    batch of backlog (on), or never (off, as before that existed)."""
    import crossmodal.indexing.folders as folders
    from crossmodal.indexing.pipeline import PipelineConfig

    decodes = DecodesOnly(encoder)

    def without_spill(*fields: Any) -> PipelineConfig:
        return PipelineConfig(*fields[:3])

    if not on:
        folders.PipelineConfig = without_spill  # type: ignore[assignment,misc]
    try:
        started = time.perf_counter()
        done = ours(decodes, folder, batch_size, workers, "encoder")
    finally:
        folders.PipelineConfig = PipelineConfig  # type: ignore[misc]
    return f"{rate(done, started):8.0f} img/s, {decodes.decoded} of {done} by the encoder"


def rate(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


def threads_alone(paths: list[str], recipe: Any, workers: int, jpegs: bool) -> float:
    from crossmodal.indexing.pipeline import Job, PipelineConfig, prepare_stream

    config = PipelineConfig(workers, 256, jpegs_to_encoder=jpegs)
    started = time.perf_counter()
    failed = sum(
        p.error is not None for p in prepare_stream([Job(p) for p in paths], recipe, (), config)
    )
    if failed:
        raise SystemExit(f"{failed} photos failed to decode")
    return rate(len(paths), started)


def encoder_decoding(encoder: Any, paths: list[str]) -> float:
    from crossmodal.media.images import probe_jpeg

    jpegs = [probe_jpeg(Path(p).read_bytes()) for p in paths]
    encoder.encode_jpegs(jpegs[: encoder.batch_size])  # kernels and nvJPEG's state built
    started = time.perf_counter()
    _, refused = encoder.encode_jpegs(jpegs)
    if refused:
        raise SystemExit(f"the encoder's decoder refused {len(refused)} photos")
    return rate(len(jpegs), started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model spec; default: random-weight ViT-B-32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--size", type=_size, default=(1024, 768), help="WIDTHxHEIGHT")
    parser.add_argument("--count", type=int, default=1024)
    parser.add_argument("--unique", type=int, default=None, help="see index_throughput.py")
    parser.add_argument("--workers", type=int, nargs="+", default=[None], help="thread counts")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from crossmodal.media.images import usable_cores
    from crossmodal.model.encoder import EncoderConfig, load_encoder
    from crossmodal.store.importing import import_lancedb

    import_lancedb()  # once, before any run is timed
    folder = photo_folder(*args.size, args.count, args.unique)
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    encoder = load_encoder(
        model_spec(args.model), EncoderConfig(args.device, args.precision, args.batch_size)
    )
    recipe = encoder.pixel_recipe
    print(f"{len(paths)} JPEGs {args.size[0]}x{args.size[1]}; {encoder.device} {encoder.precision}, "
          f"batch {args.batch_size}; {usable_cores()} cores")  # fmt: skip
    print(f"{'model alone':>34}: {model_rate(encoder):8.0f} img/s", flush=True)
    print(f"{'encoder decoding + model':>34}: {encoder_decoding(encoder, paths):8.0f} img/s")
    for workers in args.workers:
        count = workers if workers is not None else usable_cores()
        for jpegs, name in ((False, "Pillow"), (True, "JPEG header")):
            figure = threads_alone(paths, recipe, count, jpegs)
            print(f"{f'{count} threads, {name}':>34}: {figure:8.0f} img/s", flush=True)
        for decoder in ("threads", "encoder"):
            started = time.perf_counter()
            done = ours(CostsNothing(encoder), folder, args.batch_size, workers, decoder)
            label = f"no model, {count} threads, {decoder}"
            print(f"{label:>34}: {rate(done, started):8.0f} img/s", flush=True)
        for decoder in ("threads", "encoder"):
            started = time.perf_counter()
            done = ours(encoder, folder, args.batch_size, workers, decoder)
            label = f"whole run, {count} threads, {decoder}"
            print(f"{label:>34}: {rate(done, started):8.0f} img/s", flush=True)
    for on in (False, True, False, True):  # alternated: the same background load
        label = f"decoders alone, spill {'on' if on else 'off'}"
        print(f"{label:>34}: {spill(encoder, folder, args.batch_size, None, on)}", flush=True)
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        ours(encoder, folder, args.batch_size, args.workers[-1], "encoder")
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(20)
        print(out.getvalue())


if __name__ == "__main__":
    main()
