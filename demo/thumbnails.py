"""Thumbnails: rows of the index -> small JPEG copies in a folder the demo owns.

The demo shows these copies, never the original files: a photo becomes visible only by being a
row of the index, and only through a copy written here.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from crossmodal.errors import ImageDecodeError
from crossmodal.media.files import open_path
from crossmodal.media.images import decode_image
from crossmodal.media.remote import ObjectStorage
from crossmodal.store import ImageRow

log = logging.getLogger(__name__)

GRID_SIZE = 400  # longest side of a gallery tile: sharp on a 2x screen at ~200 css px
PREVIEW_SIZE = 1280  # longest side of the large view
QUALITY = 85
# Decoding releases the GIL, so a few threads make a page of 12-MP JPEGs faster even on 2 cores.
WORKERS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Thumbnail:
    """A copy of one indexed photo, or the reason there is none (file moved, deleted, corrupt)."""

    path: Path | None
    problem: str | None = None


class Thumbnails:
    """Writes and reuses JPEG copies of indexed photos under `folder`, keyed by content hash."""

    def __init__(self, folder: Path, storage: ObjectStorage | None = None) -> None:
        self.folder = folder
        self.storage = storage  # reads photos on object storage (default: the environment's)

    def of(self, row: ImageRow, size: int = GRID_SIZE) -> Thumbnail:
        target = self.folder / f"{row.content_hash}-{size}.jpg"
        if target.is_file():
            return Thumbnail(target)
        try:
            decoded = decode_image(open_path(row.path), min_side=size, storage=self.storage)
        except ImageDecodeError as exc:
            log.warning("no thumbnail for %s: %s", row.path, exc.reason)
            return Thumbnail(None, exc.reason)
        picture = decoded.image.copy()
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
        self.folder.mkdir(parents=True, exist_ok=True)
        # written under a temporary name and renamed: a concurrent request never sees half a file
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".part")
        os.close(handle)
        try:
            picture.save(temporary, "JPEG", quality=QUALITY, optimize=True)
            os.replace(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return Thumbnail(target)

    def of_many(self, rows: Sequence[ImageRow], size: int = GRID_SIZE) -> list[Thumbnail]:
        if len(rows) <= 1:
            return [self.of(row, size) for row in rows]
        with ThreadPoolExecutor(WORKERS) as pool:
            return list(pool.map(lambda row: self.of(row, size), rows))

    def placeholder(self, size: int = GRID_SIZE) -> Path:
        """A plain grey tile shown in place of a photo that cannot be read any more."""
        target = self.folder / f"missing-{size}.png"
        if not target.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (size, size * 3 // 4), (200, 200, 200)).save(target)
        return target
