"""Indexing: make the image table match a folder, doing only the work that changed.

files -> decode -> encode -> store. Each batch is one atomic upsert keyed by path, so a run that
is interrupted resumes where it stopped, with no duplicate and no lost row.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from crossmodal.errors import ImageDecodeError
from crossmodal.files import ImageFile, discover
from crossmodal.images import DecodedImage, content_hash, decode_bytes, read_image_bytes
from crossmodal.models import Encoder
from crossmodal.store import ImageRow, ImageTable, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexConfig:
    batch_size: int = 64  # images per forward pass and per database commit
    include_hidden: bool = False  # index files and folders whose names start with "."
    rebuild: bool = False  # drop the image table first (e.g. to switch models)


@dataclass(frozen=True)
class FailedFile:
    path: str
    reason: str


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
    """Index every image under `root` into the store's image table with `encoder`."""
    config = config or IndexConfig()
    started = time.perf_counter()
    root_path = Path(root).expanduser().resolve()
    found = discover(root_path, include_hidden=config.include_hidden)
    if config.rebuild:
        store.drop("images")
    table = store.images(encoder.identity, create=True)
    plan = _plan(table, root_path, found.files)
    failed = [FailedFile(s.path, s.reason) for s in found.skipped]
    counts = {"new": 0, "updated": 0, "moved": 0, "touched": 0, "encoded": 0}
    vanished = _vanished_records(table, plan)
    consumed: set[str] = set()  # vanished paths whose vector moved to a new path
    failed_stored: list[str] = []  # stored paths that now fail to decode: their rows are stale
    done = 0
    for batch in _chunks(plan.todo, config.batch_size):
        rows, vectors, to_encode, images = [], [], [], []
        own = table.records_for([f.path for f in batch if f.path in plan.stored])
        for file in batch:
            try:
                data = read_image_bytes(file.path)
                digest = content_hash(data)
                old = _reusable_record(file, digest, own, vanished, consumed)
                if old is not None:
                    rows.append(_moved_row(old[0], file))
                    vectors.append(old[1])
                    counts["moved" if old[0].path != file.path else "touched"] += 1
                    continue
                decoded = decode_bytes(data, file.path)
            except ImageDecodeError as exc:
                log.warning("skipped %s: %s", file.path, exc.reason)
                failed.append(FailedFile(file.path, exc.reason))
                if file.path in plan.stored:
                    failed_stored.append(file.path)
                continue
            to_encode.append(_row(file, decoded))
            images.append(decoded.image)
            counts["updated" if file.path in plan.stored else "new"] += 1
        if images:
            rows.extend(to_encode)
            vectors.extend(encoder.encode_images(images))
            counts["encoded"] += len(images)
        table.upsert(rows, np.asarray(vectors, np.float32).reshape(len(rows), encoder.dim))
        done += len(batch)
        if on_progress:
            elapsed = time.perf_counter() - started
            on_progress(IndexProgress(done, len(plan.todo), counts["encoded"] / max(elapsed, 1e-9)))
    on_disk = {f.path for f in found.files}
    gone = [p for p in plan.stored if p not in on_disk and p not in consumed]
    table.delete_paths(gone + list(consumed) + failed_stored)
    return IndexReport(
        root=str(root_path),
        new=counts["new"],
        updated=counts["updated"],
        moved=counts["moved"],
        unchanged=len(found.files) - len(plan.todo) + counts["touched"],
        removed=len(gone),
        failed=tuple(sorted(failed, key=lambda f: f.path)),
        encoded=counts["encoded"],
        seconds=time.perf_counter() - started,
    )


def _plan(table: ImageTable, root: Path, files: Sequence[ImageFile]) -> _Plan:
    prefix = str(root) + os.sep
    stored = {p: v for p, v in table.stored_files().items() if p.startswith(prefix)}
    todo = [f for f in files if stored.get(f.path, (None, None))[:2] != (f.size, f.mtime_ns)]
    on_disk = {f.path for f in files}
    vanished: dict[str, list[str]] = {}
    for path, (_, _, digest) in stored.items():
        if path not in on_disk:
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


def _moved_row(old: ImageRow, file: ImageFile) -> ImageRow:
    folder, name = os.path.split(file.path)
    return replace(
        old,
        path=file.path,
        folder=folder,
        name=name,
        suffix=os.path.splitext(name)[1].lower(),
        size=file.size,
        mtime_ns=file.mtime_ns,
        indexed_at=datetime.now(),
    )


def _row(file: ImageFile, decoded: DecodedImage) -> ImageRow:
    folder, name = os.path.split(file.path)
    modified = datetime.fromtimestamp(file.mtime_ns / 1e9)
    return ImageRow(
        path=file.path,
        folder=folder,
        name=name,
        suffix=os.path.splitext(name)[1].lower(),
        size=file.size,
        mtime_ns=file.mtime_ns,
        content_hash=decoded.content_hash,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        captured_at=decoded.captured_at,
        taken_at=decoded.captured_at or modified,
        indexed_at=datetime.now(),
    )


def _chunks(items: Sequence[ImageFile], size: int) -> Iterator[Sequence[ImageFile]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
