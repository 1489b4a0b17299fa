"""The streaming stage between discovery and the encoder: worker processes read, hash, decode and
shrink image files while the main process encodes earlier ones. files -> images -> encoder.

Workers never import torch: they send back model-sized uint8 pixels. Look-ahead is bounded, so
memory stays flat however many files there are; results come back in the order given.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections import deque
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np

from crossmodal.errors import CrossmodalError, ImageDecodeError
from crossmodal.images import (
    PixelRecipe,
    content_hash,
    decode_bytes,
    heif_supported,
    read_image_bytes,
    to_pixels,
)
from crossmodal.models import Encoder

log = logging.getLogger(__name__)

# Below this many files a process pool costs more to start than it saves.
MIN_FILES_FOR_WORKERS = 32
_FILES_PER_TASK = 4  # amortises the per-task overhead of the pool on small images
_MAX_CRASHES_IN_A_ROW = 3  # a pool that dies on every file is broken, not the files


@runtime_checkable
class PixelEncoder(Encoder, Protocol):
    """An encoder that takes model-sized uint8 pixels, so decoding can happen in workers."""

    pixel_recipe: PixelRecipe | None

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class PipelineConfig:
    workers: int | None = None  # decoding processes; None: one per CPU core; 0: in this process
    lookahead: int = 128  # files decoded ahead of the encoder; bounds memory (~150 kB each)


@dataclass(frozen=True)
class Job:
    """One file to prepare. `known_hash`: the content hash its stored row has, if it has one."""

    path: str
    known_hash: str | None = None


@dataclass(frozen=True)
class Prepared:
    """What a worker sends back for one file: pixels and metadata, or why it failed.

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


@dataclass(frozen=True)
class _Settings:
    recipe: PixelRecipe | None
    reusable: frozenset[str]  # content hashes of stored rows whose file vanished (moves)


_settings = _Settings(None, frozenset())  # per worker process, set once by _init_worker


def pixel_recipe(encoder: Encoder) -> PixelRecipe | None:
    """The encoder's recipe when it can take pixels prepared elsewhere, else None."""
    if isinstance(encoder, PixelEncoder):
        return encoder.pixel_recipe
    return None


def prepare(job: Job, recipe: PixelRecipe | None, reusable: frozenset[str]) -> Prepared:
    """Read, hash and (unless its vector can be reused) decode one file. Never raises."""
    try:
        data = read_image_bytes(job.path)
        digest = content_hash(data)
        if digest == job.known_hash or digest in reusable:
            return Prepared(job.path, digest)
        decoded = decode_bytes(data, job.path, min_side=recipe.min_side if recipe else None)
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
) -> Generator[Prepared, None, None]:
    """Prepare every job, yielding results in order while workers run up to `lookahead` ahead.

    Close the iterator (or let it be garbage collected) to stop the workers early.
    """
    config = config or PipelineConfig()
    known = frozenset(reusable)
    workers = worker_count(config, len(jobs))
    if workers == 0 or not jobs:
        for job in jobs:
            yield prepare(job, recipe, known)
        return
    yield from _stream_with_workers(jobs, _Settings(recipe, known), workers, config.lookahead)


def worker_count(config: PipelineConfig, jobs: int) -> int:
    if config.workers is not None:
        return max(0, config.workers)
    if jobs < MIN_FILES_FOR_WORKERS:
        return 0
    return _cpu_count()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset and container CPU limits
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _stream_with_workers(
    jobs: Sequence[Job], settings: _Settings, workers: int, lookahead: int
) -> Generator[Prepared, None, None]:
    chunks = [jobs[i : i + _FILES_PER_TASK] for i in range(0, len(jobs), _FILES_PER_TASK)]
    in_flight_max = max(1, lookahead // _FILES_PER_TASK)
    pending: deque[tuple[Sequence[Job], Future[list[Prepared]]]] = deque()
    pool = _pool(workers, settings)
    try:
        next_chunk = 0
        while pending or next_chunk < len(chunks):
            try:
                while next_chunk < len(chunks) and len(pending) < in_flight_max:
                    chunk = chunks[next_chunk]
                    pending.append((chunk, pool.submit(_prepare_chunk, chunk)))
                    next_chunk += 1
                results = pending[0][1].result()
                pending.popleft()
            except BrokenProcessPool:
                # A worker died (a decoder crash, or the OOM killer). Redo the files it may have
                # held one at a time, so only a file that kills a worker is reported as failed.
                pool.shutdown(wait=False, cancel_futures=True)
                suspects = [job for chunk, _ in pending for job in chunk]
                pending.clear()
                pool, results = _isolate(suspects, settings, workers)
            yield from results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _isolate(
    jobs: Sequence[Job], settings: _Settings, workers: int
) -> tuple[ProcessPoolExecutor, list[Prepared]]:
    results = []
    crashes_in_a_row = 0
    pool = _pool(workers, settings)
    for job in jobs:
        try:
            results.extend(pool.submit(_prepare_chunk, [job]).result())
            crashes_in_a_row = 0
        except BrokenProcessPool as exc:
            pool.shutdown(wait=False, cancel_futures=True)
            crashes_in_a_row += 1
            if crashes_in_a_row == _MAX_CRASHES_IN_A_ROW:
                raise CrossmodalError(
                    f"decoding worker processes die on every file ({exc}). If the script that "
                    "calls crossmodal does work at import time, put it under "
                    "`if __name__ == '__main__':`; or decode in one process with "
                    "IndexConfig(workers=0) (`--workers 0`)."
                ) from exc
            log.warning("a decoding worker crashed on %s", job.path)
            results.append(Prepared(job.path, error="the image decoder crashed on this file"))
            pool = _pool(workers, settings)
    return pool, results


def _pool(workers: int, settings: _Settings) -> ProcessPoolExecutor:
    # fork after torch has started its threads can deadlock; forkserver/spawn start clean
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_init_worker,
        initargs=(settings,),
    )


def _init_worker(settings: _Settings) -> None:
    global _settings
    _settings = settings
    heif_supported()  # a fresh process has only Pillow's built-in decoders registered
    # Ctrl-C reaches the whole process group; the parent decides what stops, and how
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a parent killed outright (SIGKILL, SIGTERM) cannot shut the pool down: without this the
    # workers would wait for work forever, each holding its memory
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)


def _prepare_chunk(jobs: Sequence[Job]) -> list[Prepared]:
    return [prepare(job, _settings.recipe, _settings.reusable) for job in jobs]
