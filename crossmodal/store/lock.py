"""A writer lock on a database folder: two index runs on one table serialise or one is refused.

The lock is an OS file lock (flock), so a run that is killed, even with SIGKILL, releases it.
Readers never take it: LanceDB's versioned commits give them a consistent snapshot.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from crossmodal.errors import CrossmodalError, DiskFullError, is_disk_full

LOCK_NAME = ".crossmodal-writer.lock"


class DatabaseBusyError(CrossmodalError):
    """Another process is writing to the database."""

    def __init__(self, db_dir: Path, holder: str) -> None:
        self.db_dir = db_dir
        self.holder = holder
        super().__init__(
            f"another crossmodal run ({holder}) is writing to {db_dir}.\n"
            "Fix: wait for it to finish and run again, or pass --wait to queue behind it"
        )


class WriterLock:
    """Hold with `with WriterLock(db_dir):`. `wait` seconds > 0 queues behind a running writer."""

    def __init__(self, db_dir: str | os.PathLike[str], wait: float = 0.0) -> None:
        self.db_dir = Path(db_dir)
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        path = self.db_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(str(self.db_dir)) from exc
            raise
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise DatabaseBusyError(self.db_dir, holder) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        try:  # who holds it, for the message another run gets; the flock is the lock itself
            os.pwrite(fd, f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}".encode(), 0)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
