"""The streaming stage between discovery and the encoder: decoding threads read, hash, decode and
shrink image files while the encoder works on earlier ones. files -> images -> encoder.

Threads, not processes: Pillow, blake2b and the resize release the GIL, so threads decode as fast
as a process pool did (1.1-1.3x faster here: no pickling of pixels), and a plain script, a
notebook, a REPL or a web server can index without a `__main__` guard. Look-ahead is bounded, so
memory stays flat however many files there are; results come back in the order given.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np

from crossmodal.errors import ImageDecodeError
from crossmodal.media.images import (
    PixelRecipe,
    content_hash,
    decode_bytes,
    read_image_bytes,
    to_pixels,
    usable_cores,
)
from crossmodal.media.remote import ObjectStorage
from crossmodal.model.specs import Encoder

log = logging.getLogger(__name__)


@runtime_checkable
class PixelEncoder(Encoder, Protocol):
    """An encoder that takes model-sized uint8 pixels, so decoding can happen ahead of it."""

    pixel_recipe: PixelRecipe | None

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class PipelineConfig:
    workers: int | None = (
        None  # decoding threads; None: one per CPU core; 0: in the caller's thread
    )
    lookahead: int = 128  # files decoded ahead of the encoder; bounds memory (~150 kB each)


@dataclass(frozen=True)
class Job:
    """One file to prepare. `known_hash`: the content hash its stored row has, if it has one."""

    path: str
    known_hash: str | None = None


@dataclass(frozen=True)
class Prepared:
    """What decoding gives back for one file: pixels and metadata, or why it failed.

    `pixels` is None when the file's bytes hash to a vector the table already has (a touched or
    moved file): such a file is never decoded.
    """

    path: str
    content_hash: str = ""
    pixels: np.ndarray | None = None  # model-sized (recipe) or full decoded RGB, uint8 (h, w, 3)
    width: int = 0  # full-resolution, upright
    height: int = 0
    format: str = ""
    captured_at: datetime | None = None
    error: str | None = None  # set when the file could not be read or decoded


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
) -> Prepared:
    """Read, hash and (unless its vector can be reused) decode one file, or one object read
    through `storage`. Never raises."""
    try:
        data = read_image_bytes(job.path, storage)
        digest = content_hash(data)
        if digest == job.known_hash or digest in reusable:
            return Prepared(job.path, digest)
        min_side = recipe.min_side if recipe else None
        decoded = decode_bytes(data, job.path, min_side=min_side, digest=digest)
        pixels = to_pixels(decoded.image, recipe) if recipe else np.asarray(decoded.image)
    except ImageDecodeError as exc:
        return Prepared(job.path, error=exc.reason)
    except MemoryError:
        return Prepared(job.path, error="not enough memory to decode this image")
    except Exception as exc:  # a decoder bug on one odd file must not stop a 50,000-photo run
        return Prepared(job.path, error=f"unexpected {type(exc).__name__} while decoding: {exc}")
    return Prepared(
        job.path,
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
    if workers == 0 or not jobs:
        for job in jobs:
            yield prepare(job, recipe, known, storage)
        return
    pending: deque[Future[Prepared]] = deque()
    queued = iter(jobs)
    with ThreadPoolExecutor(workers, thread_name_prefix="crossmodal-decode") as pool:
        try:
            for job in queued:
                pending.append(pool.submit(prepare, job, recipe, known, storage))
                if len(pending) >= max(1, config.lookahead):
                    break
            while pending:
                yield pending.popleft().result()
                following = next(queued, None)  # refilled once the caller took the result
                if following is not None:
                    pending.append(pool.submit(prepare, following, recipe, known, storage))
        finally:
            for future in pending:  # closed early: decode nothing more
                future.cancel()


def sample_pixels(
    paths: Iterable[str], recipe: PixelRecipe, storage: ObjectStorage | None = None
) -> np.ndarray:
    """Model-sized pixels of the given photos, (N, H, W, 3) uint8, leaving out those that fail
    to decode: what an exported encoder is checked on."""
    jobs = [Job(path) for path in paths]
    decoded = [p.pixels for p in prepare_stream(jobs, recipe, storage=storage)]
    kept = [pixels for pixels in decoded if pixels is not None]
    return np.stack(kept) if kept else np.empty((0, *recipe.size, 3), np.uint8)


def worker_count(config: PipelineConfig) -> int:
    if config.workers is not None:
        return max(0, config.workers)
    return usable_cores()
