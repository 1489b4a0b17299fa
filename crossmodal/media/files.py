"""Discovery: walk a folder and list the image files in it, the first stage of the flow.

Never follows a symlink out of a loop, never raises for one unreadable entry: what it cannot
read it reports as a failed file with the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from crossmodal.errors import CrossmodalError
from crossmodal.media.remote import ObjectStorage, is_uri

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"}
)
# Formats a photographer keeps that we do not decode: reported by name, never called corrupt.
UNSUPPORTED_SUFFIXES = {
    **dict.fromkeys((".heic", ".heif"), "HEIC/HEIF: install pillow-heif to index it"),
    **dict.fromkeys(
        (
            ".cr2",
            ".cr3",
            ".nef",
            ".nrw",
            ".arw",
            ".srf",
            ".sr2",
            ".dng",
            ".raf",
            ".orf",
            ".rw2",
            ".pef",
            ".srw",
            ".x3f",
            ".raw",
            ".3fr",
            ".iiq",
            ".erf",
            ".kdc",
            ".mrw",
        ),
        "camera RAW: export a JPEG or TIFF to index it",
    ),
}


@dataclass(frozen=True)
class ImageFile:
    """An image file found on disk, before it is read."""

    path: str  # absolute path under the resolved root folder, printable (see `printable_path`)
    size: int  # bytes
    mtime_ns: int  # modification time, nanoseconds since the epoch
    source: str | None = None  # the name to open when it differs from `path` (not UTF-8)

    @property
    def open_path(self) -> str:
        return self.source or self.path


def printable_path(path: str) -> str:
    """A path as text that every tool can print and store: itself when it is valid UTF-8 (nearly
    always); else the bytes that are not UTF-8 written as backslash escapes (`caf\\xe9.jpg`),
    which `open_path` turns back into the name on disk."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


def open_path(printable: str) -> str:
    """The name on disk of a path from `printable_path`: the text itself when such a file exists,
    else its escapes decoded back to the original bytes."""
    if "\\x" not in printable or os.path.lexists(printable):
        return printable
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), printable.encode("utf-8"))
    return os.fsdecode(raw)


@dataclass(frozen=True)
class FailedFile:
    """A file that was not indexed, and why: unreadable, corrupt, not an image, unsupported.

    Discovery reports the entries it cannot use; indexing adds the files that fail to decode.
    """

    path: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    files: tuple[ImageFile, ...]
    failed: tuple[FailedFile, ...]
    # folders that could not be opened or listed (permissions, a share that hiccuped): what they
    # hold is unknown, so nothing stored under them may be taken for deleted
    unlisted: tuple[str, ...] = ()


def supported_suffixes() -> frozenset[str]:
    """Suffixes we can decode now: the built-in ones plus those whose plugin is installed."""
    from crossmodal.media.images import heif_supported

    return IMAGE_SUFFIXES | ({".heic", ".heif"} if heif_supported() else set())


def discover(
    root: str | os.PathLike[str],
    *,
    include_hidden: bool = False,
    on_progress: Callable[[int], None] | None = None,
    storage: ObjectStorage | None = None,
) -> Discovery:
    """Find every image under `root` (a folder, or a prefix on object storage read through
    `storage`), recursively, sorted by path.

    `on_progress` is called with the number of images found so far, every 500 files.
    """
    if is_uri(root):
        return _discover_remote(str(root), storage or ObjectStorage(), include_hidden)
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise CrossmodalError(f"{root_path} is not a folder; give the folder that holds the photos")
    suffixes = supported_suffixes()
    files: list[ImageFile] = []
    failed: list[FailedFile] = []
    unlisted: list[str] = []
    for entry, error in _walk(root_path.resolve(), include_hidden):
        if error is not None:
            failed.append(FailedFile(printable_path(entry), error))
            if error.startswith(_FOLDER_ERRORS):
                unlisted.append(printable_path(entry))
            continue
        suffix = os.path.splitext(entry)[1].lower()
        if suffix not in suffixes:
            if suffix in UNSUPPORTED_SUFFIXES:
                reason = f"unsupported format {suffix} ({UNSUPPORTED_SUFFIXES[suffix]})"
                failed.append(FailedFile(printable_path(entry), reason))
            continue
        try:
            stat = os.stat(entry)
        except OSError as exc:
            failed.append(FailedFile(printable_path(entry), f"cannot stat: {exc.strerror or exc}"))
            continue
        shown = printable_path(entry)
        source = None if shown == entry else entry
        files.append(ImageFile(shown, stat.st_size, stat.st_mtime_ns, source))
        if on_progress and len(files) % 500 == 0:
            on_progress(len(files))
    files.sort(key=lambda f: f.path)
    failed.sort(key=lambda s: s.path)
    return Discovery(tuple(files), tuple(failed), tuple(sorted(unlisted)))


_FOLDER_ERRORS = ("cannot open folder", "cannot list folder")


def _discover_remote(root: str, storage: ObjectStorage, include_hidden: bool) -> Discovery:
    """Every image object under the prefix `root`: its URI, size and modification time."""
    prefix = root.rstrip("/") + "/"
    try:
        listed = storage.list_files(prefix)
    except OSError as exc:
        raise CrossmodalError(f"cannot list {root}: {exc}") from exc
    suffixes = supported_suffixes()
    files: list[ImageFile] = []
    failed: list[FailedFile] = []
    for uri, size, mtime_ns in listed:
        inside = uri[len(prefix) :].split("/")
        if not include_hidden and any(part.startswith(".") for part in inside):
            continue
        suffix = os.path.splitext(uri)[1].lower()
        if suffix in suffixes:
            files.append(ImageFile(uri, size, mtime_ns))
        elif suffix in UNSUPPORTED_SUFFIXES:
            reason = f"unsupported format {suffix} ({UNSUPPORTED_SUFFIXES[suffix]})"
            failed.append(FailedFile(uri, reason))
    return Discovery(tuple(files), tuple(failed))


def _looks_like_a_photo(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return (
        suffix in IMAGE_SUFFIXES or suffix in UNSUPPORTED_SUFFIXES or suffix in (".heic", ".heif")
    )


def _walk(root: Path, include_hidden: bool) -> Iterator[tuple[str, str | None]]:
    """Yield (file path, None) for regular files, (path, reason) for entries that cannot be used."""
    seen_dirs: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            stat = os.stat(folder)
        except OSError as exc:
            yield folder, f"cannot open folder: {exc.strerror or exc}"
            continue
        key = (stat.st_dev, stat.st_ino)
        if key in seen_dirs:  # a symlink loop, or a second link to a folder already walked
            continue
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield folder, f"cannot list folder: {exc.strerror or exc}"
            continue
        for entry in entries:
            if not include_hidden and entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=True):
                    yield entry.path, None
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    if _looks_like_a_photo(entry.name):  # a dead link to a notes.txt is not news
                        yield entry.path, "broken symlink"
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    # a FIFO or device named like a photo: opening it could block forever
                    yield entry.path, "not a regular file (pipe, socket or device)"
            except OSError as exc:
                yield entry.path, f"cannot read entry: {exc.strerror or exc}"
