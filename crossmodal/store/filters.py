"""Filters: which indexed photos a search may return, as typed values. Pure data.

The store compiles them to its query dialect (`crossmodal.store.where`); nothing here writes SQL.
Invalid values are refused when a `Filters` is made, with the valid forms in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from enum import Enum

from crossmodal.errors import FilterError

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
_DATE_FORMATS = ("%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")


class Orientation(str, Enum):
    LANDSCAPE = "landscape"  # wider than high
    PORTRAIT = "portrait"  # higher than wide
    SQUARE = "square"


ORIENTATIONS = tuple(o.value for o in Orientation)


@dataclass(frozen=True)
class Filters:
    """Conditions a hit must meet; unset fields do not filter. All conditions must hold.

    `sql` is the escape hatch: any condition on the image table's columns in LanceDB's SQL
    dialect, ANDed with the rest. Everything else is typed and checked here.
    """

    folder: str | None = None  # a folder path (and its subfolders), or a folder name anywhere
    after: datetime | None = None  # taken at or after (EXIF capture time, else file time)
    before: datetime | None = None  # taken strictly before
    min_width: int | None = None  # pixels, upright
    min_height: int | None = None
    orientation: Orientation | str | None = None  # a str ("portrait") is checked and converted
    types: tuple[str, ...] = ()  # file types, e.g. ("jpg", "png"); any of them; kept as formats
    label: str | None = None  # the label `classify --all` stored for the photo
    sql: str | None = None  # raw SQL on the image table's columns (escape hatch)

    def __post_init__(self) -> None:
        if self.folder is not None and not self.folder.strip():
            object.__setattr__(self, "folder", None)
        for name in ("min_width", "min_height"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) < 1 or value > 2**31):
                raise FilterError(f"{name} must be a whole number of pixels from 1, not {value!r}")
        if self.after and self.before and self.after >= self.before:
            raise FilterError(
                f"the date range is empty: after {self.after:%Y-%m-%d %H:%M:%S} is not before "
                f"{self.before:%Y-%m-%d %H:%M:%S}"
            )
        if self.orientation is not None:
            object.__setattr__(self, "orientation", _orientation(self.orientation))
        if isinstance(self.types, str):
            object.__setattr__(self, "types", (self.types,))
        formats = tuple(sorted({_format(t) for t in self.types}))
        object.__setattr__(self, "types", formats)
        if self.sql is not None:
            if not self.sql.strip():
                object.__setattr__(self, "sql", None)
            else:
                _check_balanced(self.sql)

    @property
    def active(self) -> bool:
        return self != Filters()

    def parts(self) -> list[tuple[str, Filters]]:
        """Each set condition on its own, named as the user set it: to tell which one matches
        no photo when a search finds nothing."""
        out = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value not in (None, ()):
                out.append((field.name, replace(Filters(), **{field.name: value})))
        return out

    def describe(self) -> str:
        """The set conditions in words, e.g. "folder Travel, after 2019-01-01"."""
        words = []
        for name, part in self.parts():
            value = getattr(part, name)
            if isinstance(value, datetime):
                value = f"{value:%Y-%m-%d %H:%M}".removesuffix(" 00:00")
            elif isinstance(value, tuple):
                value = " or ".join(value)
            elif isinstance(value, Orientation):
                value = value.value
            words.append(f"{name.replace('_', ' ')} {value}")
        return ", ".join(words)


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
    raise FilterError(
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


def _orientation(value: Orientation | str) -> Orientation:
    try:
        return Orientation(value)
    except ValueError:
        raise FilterError(
            f"unknown orientation {value!r}; choose one of {', '.join(ORIENTATIONS)}"
        ) from None


def _format(kind: str) -> str:
    key = str(kind).strip().lower().lstrip(".")
    if key in FORMATS:
        return FORMATS[key]
    if key.upper() in FORMATS.values():
        return key.upper()
    raise FilterError(f"unknown file type {kind!r}; choose from {', '.join(sorted(FORMATS))}")


def _check_balanced(sql: str) -> None:
    """Parentheses outside quotes must pair up, so the condition cannot close the brackets it
    is wrapped in and escape the other filters (`1=1) OR (1=1`)."""
    depth, quote = 0, None
    for char in sql:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                break
    if depth != 0 or quote:
        raise FilterError(
            f"the SQL filter {sql!r} has unbalanced parentheses or quotes; write one complete "
            "condition, e.g. \"width >= 3000 AND format = 'JPEG'\""
        )
