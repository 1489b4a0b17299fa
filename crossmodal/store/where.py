"""Filters -> LanceDB's SQL `where` clause. The only place crossmodal writes SQL conditions.

Every value a person typed is quoted with `sql_string`, never pasted into the SQL; the raw `sql`
escape hatch is wrapped in brackets it cannot close (`Filters` checks its balance).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from crossmodal.store.filters import Filters, Orientation

_ORIENTATION_SQL = {
    Orientation.LANDSCAPE: "width > height",
    Orientation.PORTRAIT: "width < height",
    Orientation.SQUARE: "width = height",
}


def sql_string(value: str) -> str:
    """Quote a value as an SQL string literal for a LanceDB `where` clause."""
    return "'" + value.replace("'", "''") + "'"


def where_clause(filters: Filters | None, *extra: str | None) -> str | None:
    """The `where` clause for `filters` and any extra conditions of the store's own, or None
    when nothing is filtered."""
    parts = _parts(filters) if filters is not None else []
    parts += [e for e in extra if e]
    return " AND ".join(f"({p})" for p in parts) or None


def _parts(filters: Filters) -> list[str]:
    parts = []
    if filters.folder:
        parts.append(_folder_sql(filters.folder))
    if filters.after is not None:
        parts.append(f"taken_at >= {_timestamp(filters.after)}")
    if filters.before is not None:
        parts.append(f"taken_at < {_timestamp(filters.before)}")
    if filters.min_width is not None:
        parts.append(f"width >= {int(filters.min_width)}")
    if filters.min_height is not None:
        parts.append(f"height >= {int(filters.min_height)}")
    if filters.orientation is not None:
        parts.append(_ORIENTATION_SQL[Orientation(filters.orientation)])
    if filters.types:
        parts.append("format IN (" + ", ".join(sql_string(f) for f in filters.types) + ")")
    if filters.label is not None:
        parts.append(f"label = {sql_string(filters.label)}")
    if filters.sql:
        parts.append(filters.sql.strip())
    return parts


def path_in(paths: Sequence[str]) -> str:
    return "path IN (" + ", ".join(sql_string(p) for p in paths) + ")"


def label_set_is(label_set: str, *, equal: bool) -> str:
    if equal:
        return f"label_set = {sql_string(label_set)}"
    return f"label_set IS NULL OR label_set != {sql_string(label_set)}"


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
