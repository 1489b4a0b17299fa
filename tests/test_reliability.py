"""Bad input: one generated corpus of everything a messy photo library holds, indexed in one run.

Each file must be indexed correctly or reported with its reason; the run must go on. The test
records a summary (printed at the end of the run) and asserts it exactly.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import RELIABILITY, ColourEncoder, make_image
from PIL import Image

from crossmodal.indexing import IndexConfig, index_folder
from crossmodal.media.images import heif_supported
from crossmodal.store import Store

BIG_FOLDER = 10_000


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8))


def build_corpus(root: Path) -> dict[str, tuple[str, list[Path]]]:
    """Write the corpus; return kind -> (expected outcome, files of that kind)."""
    kinds: dict[str, tuple[str, list[Path]]] = {}

    def add(kind: str, outcome: str, *paths: Path) -> None:
        kinds[kind] = (outcome, list(paths))

    root.mkdir(parents=True)
    assert heif_supported()  # registers the HEIC decoder, so Pillow can also write one here
    empty_jpg, empty_png = root / "empty.jpg", root / "empty.png"
    empty_jpg.write_bytes(b"")
    empty_png.write_bytes(b"")
    add("zero-byte files", "failed: empty file", empty_jpg, empty_png)

    for name, fmt in (("truncated.jpg", "JPEG"), ("truncated.png", "PNG")):
        _noise((300, 200)).save(root / name, fmt)
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) // 3])
    add("truncated JPEG and PNG", "failed: corrupt", root / "truncated.jpg", root / "truncated.png")

    (root / "notes.jpg").write_text("shopping list: milk, eggs")
    (root / "page.png").write_text("<!doctype html><html><body>saved page</body></html>")
    add(
        "text and HTML with image names",
        "failed: not an image",
        root / "notes.jpg",
        root / "page.png",
    )

    _png_header_only(root / "bomb.png", 40_000, 40_000)
    add("decompression bomb (1.6 gigapixels)", "failed: too large", root / "bomb.png")

    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.full((30, 40), 60000, np.uint16)).save(root / "grey16.png")
    add("CMYK and 16-bit", "indexed", root / "cmyk.jpg", root / "grey16.png")

    palette = Image.new("P", (40, 30), 0)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.save(root / "palette-alpha.png", transparency=0)
    frames = [Image.new("RGB", (40, 30), c) for c in ((200, 0, 0), (0, 0, 200))]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], loop=0)
    add(
        "palette with transparency, animated GIF",
        "indexed",
        root / "palette-alpha.png",
        root / "animated.gif",
    )

    exif = Image.Exif()
    exif[0x0112] = 6
    _noise((40, 30), 3).transpose(Image.Transpose.ROTATE_90).save(root / "rotated.png", exif=exif)
    _noise((6000, 500), 4).save(root / "panorama.jpg", quality=80)
    Image.new("RGB", (1, 1), (0, 0, 200)).save(root / "one-pixel.png")
    add(
        "EXIF-rotated, panorama, 1x1",
        "indexed",
        root / "rotated.png",
        root / "panorama.jpg",
        root / "one-pixel.png",
    )

    odd = [root / "with space.jpg", root / "ünïcödé 写真.png", root / "new\nline.png"]
    for i, path in enumerate(odd):
        make_image(path, ["red", "green", "blue"][i], fmt="PNG" if path.suffix == ".png" else None)
    add("names with spaces, Unicode, newline", "indexed", *odd)

    make_image(root / ".hidden.jpg", "red")
    make_image(root / ".thumbnails" / "t.jpg", "red")
    add(
        "hidden files and folders",
        "not indexed (hidden)",
        root / ".hidden.jpg",
        root / ".thumbnails" / "t.jpg",
    )

    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    (root / "loop").symlink_to(root)
    add("broken symlink", "failed: broken symlink", root / "dangling.jpg")

    os.mkfifo(root / "pipe.jpg")
    add("named pipe called .jpg", "failed: not a regular file", root / "pipe.jpg")

    Image.new("RGB", (40, 30), (0, 200, 0)).save(root / "iphone.heic")
    add("HEIC (pillow-heif)", "indexed", root / "iphone.heic")

    (root / "phone.cr2").write_bytes(b"II*\x00raw")
    (root / "camera.nef").write_bytes(b"MM\x00*raw")
    add("RAW files", "failed: unsupported format", root / "phone.cr2", root / "camera.nef")

    big = root / "big-folder"
    big.mkdir()
    tiny = (root / "one-pixel.png").read_bytes()
    for i in range(BIG_FOLDER):
        (big / f"{i:05}.png").write_bytes(tiny)
    add(f"folder with {BIG_FOLDER:,} entries", "indexed", *sorted(big.iterdir()))
    return kinds


def _outcome(path: Path, indexed: set[str], failed: dict[str, str]) -> str:
    if str(path) in indexed:
        return "indexed"
    reason = failed.get(str(path))
    if reason is None:
        return "not indexed (hidden)" if "/." in str(path) else "missing"
    for marker, label in (
        ("empty file", "empty file"),
        ("corrupt or truncated", "corrupt"),
        ("not a recognised image", "not an image"),
        ("too large", "too large"),
        ("broken symlink", "broken symlink"),
        ("not a regular file", "not a regular file"),
        ("unsupported format", "unsupported format"),
    ):
        if marker in reason:
            return f"failed: {label}"
    return f"failed: {reason}"


@pytest.mark.slow
def test_messy_library_is_indexed_or_reported_file_by_file(tmp_path: Path):
    root = tmp_path / "library"
    kinds = build_corpus(root)
    store = Store.open(tmp_path / "db", create=True)
    encoder = ColourEncoder()
    report = index_folder(root, store, encoder, IndexConfig(batch_size=256))
    indexed = set(store.images(encoder.identity).stored_files())
    failed = {f.path: f.reason for f in report.failed}

    rows = []
    for kind, (expected, paths) in kinds.items():
        seen = Counter(_outcome(p, indexed, failed) for p in paths)
        rows.append((kind, len(paths), expected, dict(seen)))
    for kind, count, _expected, seen in rows:
        shown = ", ".join(f"{k} x{v}" for k, v in seen.items())
        RELIABILITY[f"bad input / {kind}"] = f"{count} file(s): {shown}"
    RELIABILITY["bad input / whole corpus"] = (
        f"{len(indexed)} indexed, {len(report.failed)} reported, run completed "
        f"in {report.seconds:.1f} s"
    )

    assert [(kind, {expected: count}) for kind, count, expected, _ in rows] == [
        (kind, seen) for kind, _, _, seen in rows
    ]
    expected_indexed = sum(len(p) for e, p in kinds.values() if e == "indexed")
    assert len(indexed) == expected_indexed == report.new
    assert len(report.failed) == sum(len(p) for e, p in kinds.values() if e.startswith("failed"))


def test_rotated_photo_has_the_vector_of_the_upright_one(tmp_path: Path, tiny_model_dir: Path):
    from crossmodal.model.encoder import EncoderConfig, load_encoder

    upright = _noise((64, 48), 7)
    upright.save(tmp_path / "upright.png")
    for orientation, transpose in (
        (6, Image.Transpose.ROTATE_90),
        (8, Image.Transpose.ROTATE_270),
        (3, Image.Transpose.ROTATE_180),
    ):
        exif = Image.Exif()
        exif[0x0112] = orientation
        upright.transpose(transpose).save(tmp_path / f"rot{orientation}.png", exif=exif)
    store = Store.open(tmp_path / "db", create=True)
    encoder = load_encoder(str(tiny_model_dir), EncoderConfig("cpu", "fp32"))
    index_folder(tmp_path, store, encoder)
    table = store.images(encoder.identity)
    reference = table.get(str(tmp_path / "upright.png"))[1]
    for orientation in (3, 6, 8):
        row, vector = table.get(str(tmp_path / f"rot{orientation}.png"))
        assert (row.width, row.height) == (64, 48)
        assert float(vector @ reference) >= 0.9999


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_reported_with_permission_reason(tmp_path: Path):
    make_image(tmp_path / "photos" / "ok.png", "red")
    make_image(tmp_path / "photos" / "secret.png", "blue").chmod(0o000)
    report = index_folder(
        tmp_path / "photos", Store.open(tmp_path / "db", create=True), ColourEncoder()
    )
    assert report.new == 1
    assert [(Path(f.path).name, f.reason) for f in report.failed] == [
        ("secret.png", "cannot read file: Permission denied")
    ]


def test_read_errors_become_reasons_not_exceptions(tmp_path: Path):
    from crossmodal.errors import ImageDecodeError
    from crossmodal.media.images import decode_image

    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageDecodeError, match="cannot read file: Is a directory"):
        decode_image(tmp_path / "folder.jpg")
