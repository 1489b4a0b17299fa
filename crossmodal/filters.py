"""Filters: which indexed photos a search may return, compiled to a LanceDB `where` clause.

Every value a person typed is quoted with `store.sql_string`, never pasted into the SQL.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from crossmodal.errors import CrossmodalError
from crossmodal.store import sql_string

# what people type -> Pillow's format name, which the table stores whatever the file suffix
FORMATS = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "gif": "GIF",
    "tif": "TIFF",
    "tiff": "TIFF",
    "bmp": "BMP",
    "heic": "HEIF",
    "heif": "HEIF",
    "avif": "AVIF",
}
ORIENTATIONS = ("landscape", "portrait", "square")
_DATE_FORMATS = ("%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Filters:
    """Conditions a hit must meet; unset fields do not filter. All conditions must hold."""

    folder: str | None = None  # a folder path (and its subfolders), or a folder name anywhere
    after: datetime | None = None  # taken at or after (EXIF capture time, else file time)
    before: datetime | None = None  # taken strictly before
    min_width: int | None = None  # pixels, upright
    min_height: int | None = None
    orientation: str | None = None  # landscape, portrait or square
    types: tuple[str, ...] = ()  # file types, e.g. ("jpg", "png"); any of them
    label: str | None = None  # the label `classify --all` stored for the photo
    where: str | None = None  # any SQL condition on the image table's columns, ANDed

    def to_sql(self) -> str | None:
        """The `where` clause, or None when nothing is filtered."""
        parts = []
        if self.folder:
            parts.append(_folder_sql(self.folder))
        if self.after is not None:
            parts.append(f"taken_at >= {_timestamp(self.after)}")
        if self.before is not None:
            parts.append(f"taken_at < {_timestamp(self.before)}")
        if self.min_width is not None:
            parts.append(f"width >= {int(self.min_width)}")
        if self.min_height is not None:
            parts.append(f"height >= {int(self.min_height)}")
        if self.orientation is not None:
            parts.append(_orientation_sql(self.orientation))
        if self.types:
            formats = sorted({_format(t) for t in self.types})
            parts.append("format IN (" + ", ".join(sql_string(f) for f in formats) + ")")
        if self.label is not None:
            parts.append(f"label = {sql_string(self.label)}")
        if self.where and self.where.strip():
            parts.append(self.where.strip())
        return " AND ".join(f"({p})" for p in parts) or None

    @property
    def uses_labels(self) -> bool:
        return self.label is not None or bool(self.where and "label" in self.where)


def parse_date(text: str, *, option: str = "date", end: bool = False) -> datetime:
    """A date a person types: 2019, 2019-07, 2019-07-14, or with a time; the period's start,
    or with `end` the first moment after the period (an inclusive "until 2019-07")."""
    value = text.strip().replace("T", " ")
    for fmt in _DATE_FORMATS:
        try:
            start = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return _after_period(start, fmt) if end else start
    raise CrossmodalError(
        f"cannot read {option} {text!r}; write YYYY, YYYY-MM, YYYY-MM-DD or "
        "'YYYY-MM-DD HH:MM[:SS]', e.g. 2019-07-14"
    )


def _after_period(start: datetime, fmt: str) -> datetime:
    if fmt == "%Y":
        return start.replace(year=start.year + 1)
    if fmt == "%Y-%m":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    step = {"%Y-%m-%d": timedelta(days=1), "%Y-%m-%d %H:%M": timedelta(minutes=1)}
    return start + step.get(fmt, timedelta(seconds=1))


def _timestamp(value: datetime) -> str:
    return f"timestamp {sql_string(value.strftime('%Y-%m-%d %H:%M:%S.%f'))}"


def _folder_sql(folder: str) -> str:
    """A folder path given as such (absolute, ~, ./, or an existing folder) matches it and its
    subfolders; a bare name like "Travel" matches every folder of that name, at any depth."""
    looks_like_path = os.sep in folder or folder.startswith((".", "~")) or Path(folder).is_dir()
    if looks_like_path:
        path = str(Path(folder).expanduser().resolve())
        inside = path.rstrip(os.sep) + os.sep
        return f"folder = {sql_string(path)} OR starts_with(folder, {sql_string(inside)})"
    name = folder.strip()
    end = sql_string("%" + os.sep + _like_escape(name))
    middle = sql_string("%" + os.sep + _like_escape(name) + os.sep + "%")
    return f"folder LIKE {end} OR folder LIKE {middle}"


def _like_escape(text: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", text)


def _orientation_sql(orientation: str) -> str:
    if orientation not in ORIENTATIONS:
        raise CrossmodalError(
            f"unknown orientation {orientation!r}; choose one of {', '.join(ORIENTATIONS)}"
        )
    return {
        "landscape": "width > height",
        "portrait": "width < height",
        "square": "width = height",
    }[orientation]


def _format(kind: str) -> str:
    key = kind.strip().lower().lstrip(".")
    if key not in FORMATS:
        raise CrossmodalError(
            f"unknown file type {kind!r}; choose from {', '.join(sorted(FORMATS))}"
        )
    return FORMATS[key]
