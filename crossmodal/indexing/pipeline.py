"""The streaming stage between discovery and the encoder: decoding threads read, hash, decode and
shrink image files while the encoder works on earlier ones. files -> images -> encoder.

Threads, not processes: Pillow, blake2b and the resize release the GIL, so threads decode as fast
as a process pool did (1.1-1.3x faster here: no pickling of pixels), and a plain script, a
notebook, a REPL or a web server can index without a `__main__` guard. Look-ahead is bounded, so
memory stays flat however many files there are; results come back in the order given.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np

from crossmodal.errors import CrossmodalError, ImageDecodeError
from crossmodal.media.images import (
    JpegBytes,
    PixelRecipe,
    content_hash,
    decode_bytes,
    probe_jpeg,
    read_image_bytes,
    to_pixels,
    usable_cores,
)
from crossmodal.media.remote import ObjectStorage, is_uri
from crossmodal.model.specs import Encoder

log = logging.getLogger(__name__)


@runtime_checkable
class PixelEncoder(Encoder, Protocol):
    """An encoder that takes model-sized uint8 pixels, so decoding can happen ahead of it."""

    pixel_recipe: PixelRecipe | None

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class JpegEncoder(PixelEncoder, Protocol):
    """A pixel encoder that can also decode JPEGs itself, on its device."""

    def encode_jpegs(self, jpegs: Sequence[JpegBytes]) -> tuple[np.ndarray, list[int]]: ...


DECODERS = ("auto", "threads", "encoder")


def jpegs_to_encoder(encoder: Encoder, decoder: str) -> bool:
    """Whether JPEGs go to the encoder undecoded. `decoder`: "threads" (Pillow in the decoding
    threads), "encoder" (on the encoder's device: nvJPEG on a GPU) or "auto" (the encoder's
    when it runs on a GPU that can, else threads: on a CPU, Pillow's reduced-size decoding
    is the faster one)."""
    if decoder not in DECODERS:
        raise CrossmodalError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if decoder == "threads":
        return False
    able = isinstance(encoder, JpegEncoder) and encoder.pixel_recipe is not None
    if decoder == "encoder":
        if not able:
            raise CrossmodalError(
                "this encoder cannot decode JPEGs itself (only the torch encoder can, with a "
                "model whose preprocessing crossmodal reproduces); use decoder 'threads'"
            )
    elif not able or not encoder.device.startswith("cuda"):
        return False
    from crossmodal.model.jpeg_decode import decodes_jpegs

    if decodes_jpegs(encoder.device):
        return True
    if decoder == "encoder":
        raise CrossmodalError(
            f"torchvision cannot decode JPEGs on {encoder.device} here (a build without "
            "nvJPEG?); use decoder 'threads'"
        )
    return False


@dataclass(frozen=True)
class PipelineConfig:
    workers: int | None = (
        None  # decoding threads; None: one per CPU core; 0: in the caller's thread
    )
    # files decoded ahead of the encoder; bounds memory (~150 kB of pixels each, or the whole
    # file for a JPEG passed on undecoded)
    lookahead: int = 128
    # JPEGs are passed on undecoded (`Prepared.jpeg`), for the encoder to decode on its device
    jpegs_to_encoder: bool = False
    # with jpegs_to_encoder: once this many undecoded JPEGs wait for the encoder, the threads
    # decode the next ones with Pillow, so that both decoders work when the encoder's is the
    # slower (nvJPEG on 12 MP photos: BENCHMARKS.md, "GPU"); 0: never
    spill_after: int = 0


@dataclass(frozen=True)
class Job:
    """One file to prepare. `known_hash`: the content hash its stored row has, if it has one."""

    path: str
    known_hash: str | None = None


@dataclass(frozen=True)
class Prepared:
    """What decoding gives back for one file: pixels and metadata, or why it failed.

    `pixels` and `jpeg` are None when the file's bytes hash to a vector the table already has
    (a touched or moved file): such a file is never decoded.
    """

    path: str
    content_hash: str = ""
    pixels: np.ndarray | None = None  # model-sized (recipe) or full decoded RGB, uint8 (h, w, 3)
    width: int = 0  # full-resolution, upright
    height: int = 0
    format: str = ""
    captured_at: datetime | None = None
    error: str | None = None  # set when the file could not be read or decoded
    jpeg: JpegBytes | None = None  # instead of pixels: a JPEG the encoder decodes on its device


def pixel_recipe(encoder: Encoder) -> PixelRecipe | None:
    """The encoder's recipe when it can take pixels prepared elsewhere, else None."""
    if isinstance(encoder, PixelEncoder):
        return encoder.pixel_recipe
    return None


def prepare(
    job: Job,
    recipe: PixelRecipe | None,
    reusable: frozenset[str],
    storage: ObjectStorage | None = None,
    jpegs_to_encoder: bool = False,
    reading: AbstractContextManager[object] | None = None,
) -> Prepared:
    """Read, hash and (unless its vector can be reused) decode one file, or one object read
    through `storage`. Never raises. `reading`: held while the file is read, hashed and, for
    the encoder, its JPEG header parsed; not while Pillow decodes it."""
    with reading or nullcontext():
        try:
            data = read_image_bytes(job.path, storage)
        except ImageDecodeError as exc:
            return Prepared(job.path, error=exc.reason)
        except Exception as exc:  # a storage client's own error must not stop the run either
            reason = f"unexpected {type(exc).__name__} while reading: {exc}"
            return Prepared(job.path, error=reason)
        digest = content_hash(data)
        if digest == job.known_hash or digest in reusable:
            return Prepared(job.path, digest)
        jpeg = probe_jpeg(data) if jpegs_to_encoder and recipe is not None else None
    if jpeg is None:
        return decode_prepared(job.path, data, digest, recipe)
    return Prepared(
        job.path,
        digest,
        None,
        jpeg.width,
        jpeg.height,
        jpeg.format,
        jpeg.captured_at,
        jpeg=jpeg,
    )


def decode_prepared(path: str, data: bytes, digest: str, recipe: PixelRecipe | None) -> Prepared:
    """Decode one file's bytes with Pillow into `Prepared` pixels, or say why not. Never raises."""
    try:
        min_side = recipe.min_side if recipe else None
        decoded = decode_bytes(data, path, min_side=min_side, digest=digest)
        pixels = to_pixels(decoded.image, recipe) if recipe else np.asarray(decoded.image)
    except ImageDecodeError as exc:
        return Prepared(path, error=exc.reason)
    except MemoryError:
        return Prepared(path, error="not enough memory to decode this image")
    except Exception as exc:  # a decoder bug on one odd file must not stop a 50,000-photo run
        return Prepared(path, error=f"unexpected {type(exc).__name__} while decoding: {exc}")
    return Prepared(
        path,
        decoded.content_hash,
        pixels,
        decoded.width,
        decoded.height,
        decoded.format,
        decoded.captured_at,
    )


def prepare_stream(
    jobs: Sequence[Job],
    recipe: PixelRecipe | None,
    reusable: Iterable[str] = (),
    config: PipelineConfig | None = None,
    storage: ObjectStorage | None = None,
) -> Generator[Prepared, None, None]:
    """Prepare every job, yielding results in order while threads run up to `lookahead` ahead.

    Close the iterator (or let it be garbage collected) to stop the threads early.
    """
    config = config or PipelineConfig()
    known = frozenset(reusable)
    workers = worker_count(config)
    jpegs = config.jpegs_to_encoder
    if workers == 0 or not jobs:
        for job in jobs:
            yield prepare(job, recipe, known, storage, jpegs)
        return
    backlog = _Backlog(config.spill_after if jpegs else 0)

    def work(job: Job) -> Prepared:
        if not jpegs or backlog.full():
            return prepare(job, recipe, known, storage)
        # objects on storage wait on the network, not the GIL: no limit on reading them
        reading = None if is_uri(job.path) else backlog.readers
        result = prepare(job, recipe, known, storage, not backlog.full(), reading)
        backlog.change(result, +1)
        return result

    pending: deque[Future[Prepared]] = deque()
    queued = iter(jobs)
    with ThreadPoolExecutor(workers, thread_name_prefix="crossmodal-decode") as pool:
        try:
            for job in queued:
                pending.append(pool.submit(work, job))
                if len(pending) >= max(1, config.lookahead):
                    break
            while pending:
                result = pending.popleft().result()
                backlog.change(result, -1)
                yield result
                following = next(queued, None)  # refilled once the caller took the result
                if following is not None:
                    pending.append(pool.submit(work, following))
        finally:
            for future in pending:  # closed early: decode nothing more
                future.cancel()


class _Backlog:
    """Undecoded JPEGs prepared and not yet taken by the encoder, counted across threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit
        self.waiting = 0
        self._lock = threading.Lock()
        # threads reading, hashing and parsing headers for the encoder: at most this many
        self.readers = threading.BoundedSemaphore(HEADER_THREADS)

    def full(self) -> bool:
        return self.limit > 0 and self.waiting >= self.limit

    def change(self, result: Prepared, step: int) -> None:
        if result.jpeg is not None:
            with self._lock:
                self.waiting += step


def sample_pixels(
    paths: Iterable[str], recipe: PixelRecipe, storage: ObjectStorage | None = None
) -> np.ndarray:
    """Model-sized pixels of the given photos, (N, H, W, 3) uint8, leaving out those that fail
    to decode: what an exported encoder is checked on."""
    jobs = [Job(path) for path in paths]
    decoded = [p.pixels for p in prepare_stream(jobs, recipe, storage=storage)]
    kept = [pixels for pixels in decoded if pixels is not None]
    return np.stack(kept) if kept else np.empty((0, *recipe.size, 3), np.uint8)


# Threads at once that only read, hash and parse headers for the encoder's JPEG decoder. On a
# 16-core H200 machine 4 of them read 3,400 1 MP JPEGs a second, nearly the 3,600 of 16, and a
# whole run was faster with 4 than with 16, which get in one another's way, the GIL most likely
# (2,570 against 1,990 img/s: BENCHMARKS.md, "GPU").
HEADER_THREADS = 4


def worker_count(config: PipelineConfig) -> int:
    if config.workers is not None:
        return max(0, config.workers)
    if config.jpegs_to_encoder and not config.spill_after:
        return min(usable_cores(), HEADER_THREADS)  # nothing else for threads to do
    return usable_cores()
