"""Indexing: make the image table match a folder, doing only the work that changed.

files -> pipeline (decoding threads) -> encode -> store. Each batch is one atomic upsert keyed by
path, so a run that is interrupted resumes where it stopped, with no duplicate and no lost row.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crossmodal.errors import CrossmodalError
from crossmodal.indexing.pipeline import (
    DECODERS,
    Job,
    JpegEncoder,
    PipelineConfig,
    PixelEncoder,
    Prepared,
    decode_prepared,
    jpegs_to_encoder,
    pixel_recipe,
    prepare,
    prepare_stream,
)
from crossmodal.media.files import Discovery, FailedFile, ImageFile, discover, printable_path
from crossmodal.media.images import JpegBytes, PixelRecipe
from crossmodal.media.remote import ObjectStorage, is_uri
from crossmodal.model.specs import Encoder
from crossmodal.store import ImageRow, ImageTable, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexConfig:
    batch_size: int = 64  # images per forward pass and per database commit
    include_hidden: bool = False  # index files and folders whose names start with "."
    rebuild: bool = False  # drop the image table first (e.g. to switch models)
    workers: int | None = (
        None  # decoding threads; None: one per CPU core; 0: in the caller's thread
    )
    lookahead: int = 128  # files decoded ahead of the encoder: bounds memory (at least a batch)
    wait: float = 0.0  # seconds to queue behind another index run on the same database
    maintain: bool = True  # bring the ANN, scalar and keyword indexes up to date, and compact
    # who decodes JPEGs: "threads" (Pillow), "encoder" (its device: nvJPEG on a GPU), or "auto"
    # (the encoder's when it runs on a GPU, else threads)
    decoder: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not 1 <= self.batch_size <= 65_536:
            raise CrossmodalError(f"batch_size must be from 1 to 65,536, not {self.batch_size!r}")
        if self.workers is not None and not 0 <= self.workers <= 1024:
            raise CrossmodalError(f"workers must be from 0 to 1,024, not {self.workers!r}")
        if self.lookahead < 1:
            raise CrossmodalError(f"lookahead must be at least 1, not {self.lookahead!r}")
        if not 0 <= self.wait <= 7 * 24 * 3600:
            raise CrossmodalError(f"wait must be from 0 s to a week, not {self.wait!r}")
        if self.decoder not in DECODERS:
            raise CrossmodalError(
                f"decoder must be one of {', '.join(DECODERS)}, not {self.decoder!r}"
            )


@dataclass(frozen=True)
class IndexProgress:
    """Sent to the progress callback after each batch."""

    done: int  # files processed in this run (encoded, reused or failed)
    total: int  # files that needed work in this run
    images_per_second: float


@dataclass(frozen=True)
class IndexReport:
    root: str
    new: int = 0  # files never seen before, encoded
    updated: int = 0  # files whose content changed, re-encoded
    moved: int = 0  # files found under a new path with known content; vector reused
    unchanged: int = 0  # same path, size and modification time
    removed: int = 0  # rows whose file is gone, deleted
    failed: tuple[FailedFile, ...] = field(default_factory=tuple)
    encoded: int = 0  # images that went through the model
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Plan:
    todo: list[ImageFile]  # new or changed files
    stored: dict[str, tuple[int, int, str]]  # rows under the root: path -> size, mtime, hash
    vanished: dict[str, list[str]]  # content hash -> stored paths no longer on disk


def index_folder(
    root: str | os.PathLike[str],
    store: Store,
    encoder: Encoder,
    config: IndexConfig | None = None,
    on_progress: Callable[[IndexProgress], None] | None = None,
) -> IndexReport:
    """Index every image under `root` into the store's image table with `encoder`.

    Decoding threads prepare the next images while the encoder works on the current batch, so
    it runs as fast from a script, a notebook or a web server as from the CLI.
    One run writes to a database at a time: another one waits `config.wait` seconds, then is
    refused with `DatabaseBusyError`.
    """
    config = config or IndexConfig()
    with store.writer_lock(config.wait):
        return _index_folder(root, store, encoder, config, on_progress)


def _index_folder(
    root: str | os.PathLike[str],
    store: Store,
    encoder: Encoder,
    config: IndexConfig,
    on_progress: Callable[[IndexProgress], None] | None,
) -> IndexReport:
    run = begin_run(root, store, encoder, config)
    recipe = pixel_recipe(encoder)
    # without a recipe the threads hold whole decoded images: keep just one batch in flight
    lookahead = max(config.lookahead, config.batch_size) if recipe else config.batch_size
    pipeline = PipelineConfig(config.workers, lookahead)
    if jpegs_to_encoder(encoder, config.decoder):
        # room for a batch waiting on the encoder and one more, which the threads decode
        # themselves when the encoder's decoder falls behind
        lookahead = max(lookahead, 2 * config.batch_size)
        pipeline = PipelineConfig(config.workers, lookahead, True, config.batch_size)
    stream = prepare_stream(run.jobs(), recipe, run.vanished, pipeline, run.storage)
    with closing(stream):  # stops the decoding threads if encoding or writing fails
        done = 0
        for batch in _chunks(run.plan.todo, config.batch_size):
            run.commit(batch, [next(stream) for _ in batch], recipe)
            done += len(batch)
            if on_progress:
                on_progress(IndexProgress(done, len(run.plan.todo), run.images_per_second()))
    return run.finish(config)


def begin_run(
    root: str | os.PathLike[str], store: Store, encoder: Encoder, config: IndexConfig
) -> Run:
    """Discover the files under `root` and compare them with the table: what a run must do.

    Shared by every engine (this module's threads, `crossmodal.indexing.on_ray`), so that they
    plan, count and clean up alike. The caller holds the database's writer lock.
    """
    started = time.perf_counter()
    root_path = str(root).rstrip("/") if is_uri(root) else Path(root).expanduser().resolve()
    found = discover(root_path, include_hidden=config.include_hidden, storage=store.storage)
    if config.rebuild:
        store.drop("images")
    table = store.images(encoder.identity, create=True)
    plan = _plan(table, root_path, found.files, found.unlisted)
    vanished = _vanished_records(table, plan)
    run = Run(table, encoder, plan, vanished, root_path, found, started, store.storage)
    run.failed.extend(found.failed)
    return run


class Run:
    """The state of one indexing run; `commit` turns one batch into one atomic upsert."""

    def __init__(
        self,
        table: ImageTable,
        encoder: Encoder,
        plan: _Plan,
        vanished: dict[str, tuple[ImageRow, np.ndarray]],
        root: Path | str,
        found: Discovery,
        started: float,
        storage: ObjectStorage,
    ) -> None:
        self.storage = storage  # reads the photos when they are on object storage
        self.root = root
        self.found = found
        self.started = started
        self.table = table
        self.encoder = encoder
        self.plan = plan
        self.vanished = vanished
        self.consumed: set[str] = set()  # vanished paths whose vector moved to a new path
        self.failed: list[FailedFile] = []
        self.failed_stored: list[str] = []  # stored paths that now fail to decode: stale rows
        self.counts = {"new": 0, "updated": 0, "moved": 0, "touched": 0}
        self.encoded = 0

    def jobs(self) -> list[Job]:
        """What the decoder must prepare: each file to do, with its stored content hash."""
        stored = self.plan.stored
        return [
            Job(f.open_path, stored[f.path][2] if f.path in stored else None)
            for f in self.plan.todo
        ]

    def images_per_second(self) -> float:
        return self.encoded / max(time.perf_counter() - self.started, 1e-9)

    def commit(
        self,
        batch: Sequence[ImageFile],
        results: Sequence[Prepared],
        recipe: PixelRecipe | None,
        encoded: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Write one batch of prepared files as one upsert, encoding those that need it.

        `encoded`: vectors an engine already computed elsewhere (Ray's encoder actors), by path,
        for the files whose pixels it encoded; the rest of the bookkeeping is the same.
        """
        rows: list[ImageRow] = []
        vectors: list[np.ndarray] = []
        to_encode: list[ImageRow] = []
        pixels: list[np.ndarray] = []
        jpeg_rows: list[ImageRow] = []  # for the encoder to decode on its device
        jpegs: list[JpegBytes] = []
        own = self.table.records_for([f.path for f in batch if f.path in self.plan.stored])
        for file, result in zip(batch, results, strict=True):
            assert file.open_path == result.path, "the pipeline yields results in job order"
            fresh = encoded is not None and file.path in encoded
            if result.pixels is None and result.jpeg is None and result.error is None and not fresh:
                old = _reusable_record(file, result.content_hash, own, self.vanished, self.consumed)
                if old is not None:
                    rows.append(_moved_row(old[0], file))
                    vectors.append(old[1])
                    self.counts["moved" if old[0].path != file.path else "touched"] += 1
                    continue
                if encoded is not None:
                    # an engine only skips files whose stored row has their bytes: not this one
                    result = replace(result, error="changed while it was indexed; index again")
                else:
                    # a second copy of a moved photo: the vector went to the first, so decode it
                    result = prepare(Job(file.open_path), recipe, frozenset(), self.storage)
            if result.error is not None or (
                result.pixels is None and not result.jpeg and not fresh
            ):
                self._skip(file.path, result.error or "no pixels")
                continue
            if fresh:
                assert encoded is not None
                rows.append(_row(file, result))
                vectors.append(encoded[file.path])
                self.encoded += 1
            elif result.jpeg is not None:  # counted once the device has decoded it
                jpeg_rows.append(_row(file, result))
                jpegs.append(result.jpeg)
                continue
            else:
                to_encode.append(_row(file, result))
                assert result.pixels is not None
                pixels.append(result.pixels)
            self._count_encoded(file.path, result.content_hash)
        if jpegs:
            done, done_vectors, fallen_back, fallen_pixels = self._encode_jpegs(
                jpeg_rows, jpegs, recipe
            )
            rows.extend(done)
            vectors.extend(done_vectors)
            to_encode.extend(fallen_back)
            pixels.extend(fallen_pixels)
        if pixels:
            rows.extend(to_encode)
            vectors.extend(self._encode(pixels, recipe))
            self.encoded += len(pixels)
        matrix = np.asarray(vectors, np.float32).reshape(len(rows), self.encoder.dim)
        self.table.upsert(rows, matrix)

    def _skip(self, path: str, reason: str) -> None:
        """Report a file that could not be encoded; its stored row, if any, is stale."""
        log.warning("skipped %s: %s", path, reason)
        self.failed.append(FailedFile(path, reason))
        if path in self.plan.stored:
            self.failed_stored.append(path)

    def _count_encoded(self, path: str, digest: str) -> None:
        if path in self.plan.stored:
            self.counts["updated"] += 1
            return
        record = self.vanished.get(digest)
        if record is not None and record[0].path not in self.consumed:
            # an engine that encoded a moved photo again: still a move, and the old row goes
            self.consumed.add(record[0].path)
            self.counts["moved"] += 1
        else:
            self.counts["new"] += 1

    def finish(self, config: IndexConfig) -> IndexReport:
        """Remove the rows of deleted files, bring the indexes up to date, and report."""
        found, plan = self.found, self.plan
        on_disk = {f.path for f in found.files}
        gone = [
            p
            for p in plan.stored
            if p not in on_disk and p not in self.consumed and not _inside(p, found.unlisted)
        ]
        self.table.delete_paths(gone + list(self.consumed) + self.failed_stored)
        if config.maintain:
            # a table built from Python searches as fast as one built by the CLI
            self.table.maintain_index()
        return IndexReport(
            root=str(self.root),
            new=self.counts["new"],
            updated=self.counts["updated"],
            moved=self.counts["moved"],
            unchanged=len(found.files) - len(plan.todo) + self.counts["touched"],
            removed=len(gone),
            failed=tuple(sorted(self.failed, key=lambda f: f.path)),
            encoded=self.encoded,
            seconds=time.perf_counter() - self.started,
        )

    def _encode_jpegs(
        self, rows: list[ImageRow], jpegs: list[JpegBytes], recipe: PixelRecipe | None
    ) -> tuple[list[ImageRow], np.ndarray, list[ImageRow], list[np.ndarray]]:
        """Encode a batch's JPEGs with the encoder's own decoder: the rows it encoded and their
        vectors, then the rows it refused that Pillow decoded, and their pixels. Those Pillow
        cannot decode either are reported as failed."""
        assert isinstance(self.encoder, JpegEncoder)
        vectors, refused = self.encoder.encode_jpegs(jpegs)
        skipped = set(refused)
        encoded = [row for i, row in enumerate(rows) if i not in skipped]
        for row in encoded:
            self._count_encoded(row.path, row.content_hash)
        self.encoded += len(encoded)
        fallen_back: list[ImageRow] = []
        pixels: list[np.ndarray] = []
        for i in refused:
            row = rows[i]
            result = decode_prepared(row.path, jpegs[i].data, row.content_hash, recipe)
            if result.error is not None or result.pixels is None:
                self._skip(row.path, result.error or "no pixels")
                continue
            fallen_back.append(row)
            pixels.append(result.pixels)
            self._count_encoded(row.path, row.content_hash)
        return encoded, vectors, fallen_back, pixels

    def _encode(self, pixels: list[np.ndarray], recipe: PixelRecipe | None) -> np.ndarray:
        if recipe is not None and isinstance(self.encoder, PixelEncoder):
            return self.encoder.encode_pixels(np.stack(pixels))
        return self.encoder.encode_images([Image.fromarray(p) for p in pixels])


def _inside(path: str, folders: Sequence[str]) -> bool:
    """Whether `path` lies in one of `folders` (whose contents could not be listed)."""
    return any(path.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders)


def _plan(
    table: ImageTable, root: Path | str, files: Sequence[ImageFile], unlisted: Sequence[str] = ()
) -> _Plan:
    prefix = printable_path(str(root)) + os.sep
    stored = table.stored_files(prefix)  # only this folder's rows: a big table holds others
    todo = [f for f in files if stored.get(f.path, (None, None))[:2] != (f.size, f.mtime_ns)]
    on_disk = {f.path for f in files}
    vanished: dict[str, list[str]] = {}
    for path, (_, _, digest) in stored.items():
        if path not in on_disk and not _inside(path, unlisted):  # unknown is not vanished
            vanished.setdefault(digest, []).append(path)
    return _Plan(todo, stored, vanished)


def _vanished_records(table: ImageTable, plan: _Plan) -> dict[str, tuple[ImageRow, np.ndarray]]:
    """Rows whose file is gone, by content hash: a new path with that content is a move."""
    if not plan.vanished or all(f.path in plan.stored for f in plan.todo):
        return {}
    records = table.records_for([p for paths in plan.vanished.values() for p in paths])
    return {record[0].content_hash: record for record in records.values()}


def _reusable_record(
    file: ImageFile,
    digest: str,
    own: dict[str, tuple[ImageRow, np.ndarray]],
    vanished: dict[str, tuple[ImageRow, np.ndarray]],
    consumed: set[str],
) -> tuple[ImageRow, np.ndarray] | None:
    """A stored row and vector `file` can take over instead of being encoded again.

    Its own row when only the modification time changed; otherwise, for a new path, the row of a
    vanished file with the same bytes (a move or rename), which moves to one new path only.
    """
    if file.path in own:
        mine = own[file.path]
        return mine if mine[0].content_hash == digest else None
    record = vanished.get(digest)
    if record is None or record[0].path in consumed:
        return None
    consumed.add(record[0].path)
    return record


def _file_fields(file: ImageFile) -> dict[str, Any]:
    """The row fields that come from the file itself, not from its pixels."""
    folder, name = os.path.split(file.path)
    suffix = os.path.splitext(name)[1].lower()
    return {
        "path": file.path,
        "folder": folder,
        "name": name,
        "suffix": suffix,
        "size": file.size,
        "mtime_ns": file.mtime_ns,
        "indexed_at": datetime.now(),
    }


def _moved_row(old: ImageRow, file: ImageFile) -> ImageRow:
    # without an EXIF date, the date filters go by the file's time, which may have been fixed
    taken = old.taken_at if old.captured_at else datetime.fromtimestamp(file.mtime_ns / 1e9)
    return replace(old, **_file_fields(file), taken_at=taken)


def _row(file: ImageFile, decoded: Prepared) -> ImageRow:
    modified = datetime.fromtimestamp(file.mtime_ns / 1e9)
    return ImageRow(
        **_file_fields(file),
        content_hash=decoded.content_hash,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        captured_at=decoded.captured_at,
        taken_at=decoded.captured_at or modified,
    )


def _chunks(items: Sequence[ImageFile], size: int) -> Iterator[Sequence[ImageFile]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
