"""Image sets for evaluation and fine-tuning, read from disk into frozen records.

Captioned images (CSV or JSONL, the Flickr30k/COCO retrieval layout) and folder-per-class sets.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossmodal.errors import DatasetError, MissingImagesError

IMAGE_COLUMNS = ("image", "filename", "file", "path", "image_path")
CAPTION_COLUMNS = ("caption", "text", "comment", "sentence")
LABEL_COLUMNS = ("label", "group")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class CaptionedImage:
    path: Path
    captions: tuple[str, ...]  # one or more, in file order
    label: str | None = None  # optional group key (e.g. an attribute combination) for matching


@dataclass(frozen=True)
class CaptionedSet:
    """Images with their captions, in file order of first appearance."""

    source: Path  # the captions file
    items: tuple[CaptionedImage, ...]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def caption_count(self) -> int:
        return sum(len(item.captions) for item in self.items)

    @property
    def has_labels(self) -> bool:
        return all(item.label is not None for item in self.items)


@dataclass(frozen=True)
class ClassFolderSet:
    """A folder-per-class image set: `classes[i]` names the images whose `targets` entry is i."""

    root: Path
    classes: tuple[str, ...]  # folder names with '_' and '-' read as spaces, sorted by folder
    paths: tuple[Path, ...]
    targets: tuple[int, ...]


def read_captions(path: Path, image_root: Path | None = None) -> CaptionedSet:
    """Read a captions file: CSV with a header (image, caption[, label]) or JSONL.

    JSONL lines are objects with "image" and "caption" (a string) or "captions" (a list), and an
    optional "label". Rows naming the same image are merged. Image paths are relative to
    `image_root`, by default the captions file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            str(path),
            "captions file not found",
            "give the path of a .csv or .jsonl file listing image, caption",
        )
    root = Path(image_root) if image_root is not None else path.parent
    suffix = path.suffix.lower()
    if suffix == ".csv" or suffix == ".tsv":
        rows = _csv_rows(path)
    elif suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    else:
        raise DatasetError(
            str(path),
            f"unknown captions format {suffix!r}",
            "use a .csv (columns image, caption) or a .jsonl file",
        )
    merged: dict[str, tuple[list[str], str | None]] = {}
    for line, image, caption, label in rows:
        captions, known_label = merged.setdefault(image, ([], label))
        if known_label != label:
            raise DatasetError(
                f"{path}:{line}",
                f"image {image!r} has two labels ({known_label!r} and {label!r})",
                "give each image one label",
            )
        captions.extend(caption)
    if not merged:
        raise DatasetError(
            str(path), "the captions file lists no images", "add rows of image, caption"
        )
    items = tuple(
        CaptionedImage(root / image, tuple(caps), label) for image, (caps, label) in merged.items()
    )
    missing = [str(item.path) for item in items if not item.path.is_file()]
    if missing:
        raise MissingImagesError(str(path), missing)
    return CaptionedSet(path, items)


_Row = tuple[int, str, list[str], "str | None"]


def _pick(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {c.strip().lower(): c for c in columns}
    return next((lowered[n] for n in names if n in lowered), None)


def _csv_rows(path: Path) -> list[_Row]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(fh, dialect=dialect)
        columns = list(reader.fieldnames or [])
        image_col, caption_col = _pick(columns, IMAGE_COLUMNS), _pick(columns, CAPTION_COLUMNS)
        label_col = _pick(columns, LABEL_COLUMNS)
        if image_col is None or caption_col is None:
            raise DatasetError(
                str(path),
                f"the header {columns} has no image and caption columns",
                "start the file with a header line such as: image,caption",
            )
        rows = []
        for line, record in enumerate(reader, start=2):
            image, caption = (record.get(image_col) or "").strip(), record.get(caption_col)
            if not image or not caption or not caption.strip():
                raise DatasetError(
                    f"{path}:{line}",
                    "row without an image path or a caption",
                    "fill in both columns or delete the row",
                )
            label = (record.get(label_col) or "").strip() or None if label_col else None
            rows.append((line, image, [caption.strip()], label))
    return rows


def _jsonl_rows(path: Path) -> list[_Row]:
    rows = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}:{line}", f"not valid JSON ({exc.msg})", "write one JSON object per line"
            ) from exc
        image = record.get("image") if isinstance(record, dict) else None
        captions = (
            record.get("captions", record.get("caption")) if isinstance(record, dict) else None
        )
        if isinstance(captions, str):
            captions = [captions]
        if (
            not isinstance(image, str)
            or not image
            or not isinstance(captions, list)
            or not captions
            or not all(isinstance(c, str) and c.strip() for c in captions)
        ):
            raise DatasetError(
                f"{path}:{line}",
                'a line needs "image" and "caption" (a string) or "captions" (a list of strings)',
                'write e.g. {"image": "a.jpg", "captions": ["a dog"]}',
            )
        label = record.get("label")
        rows.append(
            (line, image, [c.strip() for c in captions], str(label) if label is not None else None)
        )
    return rows


def read_class_folders(root: Path) -> ClassFolderSet:
    """Read a folder whose sub-folders are classes and hold that class's images."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            str(root),
            "class folder not found",
            "give a folder with one sub-folder of images per class",
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[Path] = []
    targets: list[int] = []
    classes = []
    for index, class_dir in enumerate(class_dirs):
        images = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        classes.append(class_dir.name.replace("_", " ").replace("-", " "))
        paths.extend(images)
        targets.extend([index] * len(images))
    if len(classes) < 2 or not paths:
        raise DatasetError(
            str(root),
            f"found {len(classes)} class folder(s) and {len(paths)} image(s)",
            "give at least two sub-folders, each holding images",
        )
    return ClassFolderSet(root, tuple(classes), tuple(paths), tuple(targets))
