"""Typed errors a caller must act on. Each message says what went wrong, where, and how to fix it."""

from __future__ import annotations

import errno


class CrossmodalError(Exception):
    """Base class for every error crossmodal raises on purpose."""


class ModelSpecError(CrossmodalError, ValueError):
    """A model spec string could not be parsed."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(
            f"cannot understand model {spec!r}: {reason}\n"
            "Valid forms:\n"
            "  ARCH:PRETRAINED      an open_clip architecture and pretrained tag, "
            "e.g. ViT-B-32:laion2b_s34b_b79k\n"
            "  hf-hub:ORG/REPO      an open_clip model on the Hugging Face hub\n"
            "  DIR                  a local model directory with open_clip_config.json and weights\n"
            "  ARCH:FILE            an open_clip architecture with a local checkpoint "
            "(.safetensors, .pt, .bin)"
        )


class ModelLoadError(CrossmodalError):
    """The model could not be created or its weights could not be loaded."""


class ModelMismatchError(CrossmodalError):
    """A table was built by another model than the one in use."""

    def __init__(self, table: str, table_model: str, current_model: str, fix: str) -> None:
        self.table = table
        self.table_model = table_model
        self.current_model = current_model
        self.fix = fix
        super().__init__(
            f"table {table!r} was built with model {table_model!r}, "
            f"but the model in use is {current_model!r}; vectors of different models cannot be "
            f"compared.\nFix: {fix}"
        )


class FilterError(CrossmodalError, ValueError):
    """A search filter holds a value that cannot mean anything (an unknown type, an empty range)."""


class StoreError(CrossmodalError):
    """The database is missing, unreadable, or not a crossmodal database."""


class DiskFullError(StoreError):
    """A write found no space left on the disk that holds the database."""

    def __init__(self, db: str) -> None:
        self.db = db
        super().__init__(
            f"the disk holding {db} is full (no space left on device). Nothing half-written "
            "was kept: each write to a table is one commit, and the tables are as they were.\n"
            "Fix: free space on that disk (or choose a --db on another one), then run the same "
            "command again"
        )


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error from the OS or from LanceDB means "no space left on device"."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return (
        "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text
    )


class TableNotFoundError(StoreError):
    """A table the caller asked for does not exist yet."""

    def __init__(self, table: str, db: str, fix: str) -> None:
        self.table = table
        self.db = db
        self.fix = fix
        super().__init__(f"no table {table!r} in database {db}.\nFix: {fix}")


class ImageDecodeError(CrossmodalError):
    """One image could not be read; indexing records it and moves on."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DatasetError(CrossmodalError):
    """A captions file or a folder-per-class image set is missing or malformed."""

    def __init__(self, path: str, reason: str, fix: str) -> None:
        self.path = path
        self.reason = reason
        self.fix = fix
        super().__init__(f"{path}: {reason}\nFix: {fix}")


class MissingImagesError(DatasetError):
    """A captions file names images that do not exist."""

    def __init__(self, path: str, missing: list[str]) -> None:
        self.missing = missing
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        super().__init__(
            path,
            f"{len(missing)} image(s) named in the captions file do not exist: {shown}",
            "image paths are read relative to the captions file's folder (or --images DIR); "
            "check that folder, or remove those rows",
        )


class TrainingError(CrossmodalError):
    """Fine-tuning could not start or could not go on (bad config, diverging loss)."""
