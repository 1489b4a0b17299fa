"""The user's cache folder, and file digests remembered there so a model is not re-hashed.

A digest is kept against the file's size, modification time, inode and change time (what git's
index checks): a file written again, moved over or touched is hashed anew; an unchanged one is
not read at all. A cache that cannot be written only costs the hashing again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV_VAR = "CROSSMODAL_CACHE"
_DIGESTS = "digests.json"
_RACY_NS = 2_000_000_000


def cache_dir() -> Path:
    """$CROSSMODAL_CACHE, else $XDG_CACHE_HOME/crossmodal, else ~/.cache/crossmodal."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "crossmodal"


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256, from the cache while the file is unchanged."""
    path = Path(path).resolve()
    key, stamp = str(path), _stamp(path)
    store = cache_dir() / _DIGESTS
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(key) if isinstance(known, dict) else None
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        return str(entry["digest"])
    digest = _hash(path)
    # A file changed while it was read, or written so recently that a rewrite of the same size
    # could still get the same timestamps (git's "racy" case), is hashed again next time.
    if _stamp(path) != stamp or time.time_ns() - stamp[1] < _RACY_NS:
        return digest
    known = known if isinstance(known, dict) else {}
    known[key] = {"stamp": stamp, "digest": digest}
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        partial = store.with_name(f"{_DIGESTS}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(known))
        partial.replace(store)  # atomic: a concurrent reader sees the old or the new file
    except OSError as exc:
        log.debug("could not remember the digest of %s: %s", path, exc)
    return digest
