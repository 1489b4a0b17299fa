"""How LanceDB's failures reach the user: damaged files, lost commit races, refused filters.

Each becomes a `StoreError` that names the fix, or is retried when it is safe to; the tables of
`crossmodal.store.tables` wear `reports_damage` and run their filtered queries through
`guarded_filter`.
"""

from __future__ import annotations

import functools
import itertools
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa

from crossmodal.errors import CrossmodalError, DiskFullError, StoreError, is_disk_full

RETRYABLE = "Retryable commit conflict"  # Lance's words when another writer committed first
COMMIT_RETRIES = 8


def lance_reason(exc: BaseException) -> str:
    """LanceDB's error message without the Rust source location it appends."""
    return str(exc).split(", /")[0]


C = TypeVar("C", bound=type)
T = TypeVar("T")


def reports_damage(cls: C) -> C:
    """Class decorator: when LanceDB fails to read or write the table's files (a data file
    deleted or truncated, a disk error), a public method raises a StoreError naming the fix
    instead of a library traceback. A commit that lost a race with another writer (a database
    on object storage has no lock) is run again: every method here is keyed and idempotent."""

    def guarded(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            for attempt in itertools.count():
                try:
                    return method(self, *args, **kwargs)
                except CrossmodalError:
                    raise
                except (RuntimeError, OSError, pa.ArrowException) as exc:
                    if isinstance(exc, pa.ArrowException) and not damaged(exc):
                        raise  # Arrow refused the caller's data (lengths, types): not the files
                    if RETRYABLE in str(exc) and attempt < COMMIT_RETRIES:
                        time.sleep(random.uniform(0.05, 0.2) * 2**attempt)
                        continue
                    if is_disk_full(exc):
                        raise DiskFullError(self.db_dir) from exc
                    reason = lance_reason(exc)
                    raise StoreError(
                        f"table {self.name!r} could not be read or written: {reason}\n"
                        "Its files may be damaged (deleted, truncated, or on a failing disk); "
                        "your photos are untouched.\nFix: rebuild the index from the photos: "
                        "`crossmodal index PHOTOS_DIR --db DB --rebuild`"
                    ) from exc
            raise AssertionError("unreachable")

        return wrapper

    for name, member in list(vars(cls).items()):
        if callable(member) and not name.startswith("_"):
            setattr(cls, name, guarded(member))
    return cls


def guarded_filter(call: Callable[[], T], where: str | None) -> T:
    """`call()`, with a failure caused by the filter `where` reported as a StoreError."""
    try:
        return call()
    except Exception as exc:
        refused = filter_error(where, exc)
        if refused is None:
            raise
        raise refused from exc


def damaged(exc: BaseException) -> bool:
    """Lance could not find or read one of the table's own files (deleted, truncated, garbled):
    damage, whatever the query asked."""
    text = str(exc)
    return isinstance(exc, OSError) or "Not found: " in text or "LanceError(IO)" in text


def filter_error(where: str | None, exc: Exception) -> StoreError | None:
    """A StoreError naming the filter, when there is one and Lance refused it (a ValueError or
    RuntimeError, or a panic of its SQL parser on odd text such as `:0`, which reaches Python as
    a bare `pyo3_async_runtimes.RustPanic` through LanceDB and as "Task was aborted" through
    Lance); None when the failure is not the filter's (a data file gone is damage)."""
    refused = isinstance(exc, (ValueError, RuntimeError)) or type(exc).__name__ == "RustPanic"
    if not where or not refused or damaged(exc):
        return None
    reason = lance_reason(exc)
    return StoreError(
        f"the filter cannot be applied: {reason}\n  where: {where}\n"
        "Fix: use the columns path, folder, name, suffix, size, width, height, format, "
        "taken_at, captured_at (and label after `crossmodal classify --all`), with SQL "
        "syntax, e.g. \"width >= 3000 AND format = 'JPEG'\""
    )
