"""Decoding: image file bytes -> an upright RGB picture plus the metadata a photo user filters on,
and, given a model's `PixelRecipe`, the model-sized uint8 pixels (torch-free, for worker processes).

Each failure becomes an `ImageDecodeError` with a reason a person understands; the caller
decides to skip and report it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from crossmodal.errors import ImageDecodeError
from crossmodal.media.remote import ObjectStorage, is_uri

# Pillow refuses images above 2x its MAX_IMAGE_PIXELS (about 179 MP) as decompression bombs; we
# accept up to that, so a 150 MP panorama indexes and a forged 1-gigapixel header does not.
EXIF_IFD = 0x8769
EXIF_DATETIME_ORIGINAL = 36867
EXIF_DATETIME = 306
EXIF_ORIENTATION = 0x0112  # 1: upright; 2-8: mirrored and/or turned
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded photo, oriented upright and converted to 8-bit RGB."""

    image: Image.Image
    width: int  # full-resolution width after EXIF orientation (not the draft-decoded size)
    height: int
    format: str  # Pillow's format name: JPEG, PNG, WEBP, GIF, TIFF, ...
    captured_at: datetime | None  # EXIF DateTimeOriginal, when the photo carries one
    content_hash: str  # blake2b of the file bytes; recognises a moved or renamed photo


def heif_supported() -> bool:
    """Register pillow-heif's HEIC/HEIF decoder with Pillow, if the package is installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def decode_image(
    path: str | Path, *, min_side: int | None = None, storage: ObjectStorage | None = None
) -> DecodedImage:
    """Read and decode one image file.

    `min_side`: when set, a JPEG much larger than needed is decoded at a reduced scale (Pillow's
    draft mode, DCT scaling), never below `min_side` pixels on its shorter side.
    """
    return decode_bytes(read_image_bytes(path, storage), str(path), min_side=min_side)


def read_image_bytes(path: str | Path, storage: ObjectStorage | None = None) -> bytes:
    """The bytes of an image file, or of an object on storage (read through `storage`); an
    unreadable or empty one is an ImageDecodeError."""
    try:
        if is_uri(path):
            data = (storage or ObjectStorage()).read(str(path))
        else:
            data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(str(path), f"cannot read file: {exc.strerror or exc}") from exc
    if not data:
        raise ImageDecodeError(str(path), "empty file (0 bytes)")
    return data


def decode_bytes(
    data: bytes, name: str = "<bytes>", *, min_side: int | None = None, digest: str | None = None
) -> DecodedImage:
    """Decode an image held in memory (an upload, or file bytes already read). `digest`: its
    `content_hash`, when the caller has it already."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or "unknown"
            width, height = image.size
            if min_side and fmt == "JPEG" and min(width, height) >= 2 * min_side:
                image.draft("RGB", _draft_request(width, height, min_side))
            image.load()
            captured = _captured_at(image)
            orientation = image.getexif().get(EXIF_ORIENTATION)
            # exif_transpose copies even an upright image: about 1 ms a 0.8 MP photo here
            upright = ImageOps.exif_transpose(image) if orientation in range(2, 9) else image
            if orientation in (5, 6, 7, 8):  # turned a quarter: width and height swap
                width, height = height, width
            rgb = to_rgb(upright)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, f"too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            name, "not a recognised image format (wrong extension, or not an image at all)"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(name, f"corrupt or truncated image: {exc}") from exc
    return DecodedImage(rgb, width, height, fmt, captured, digest or content_hash(data))


@dataclass(frozen=True)
class JpegBytes:
    """A JPEG left undecoded for a decoder on the encoder's device (nvJPEG on a GPU), with what
    its header says; Pillow never decodes its pixels."""

    data: bytes  # the first image's bytes: without what follows its end (an MPO's second view,
    # a phone's motion-photo video)
    orientation: int  # EXIF orientation, 1-8, applied after decoding
    width: int  # full-resolution, upright
    height: int
    captured_at: datetime | None
    format: str = "JPEG"  # Pillow's name for the file: JPEG or MPO

    @property
    def pixels(self) -> int:
        return self.width * self.height


def probe_jpeg(data: bytes) -> JpegBytes | None:
    """`data` as a `JpegBytes` when it is a whole JPEG (or MPO) in colour or grey, from its
    header alone; None for anything else (other formats, CMYK, a file cut short, a header
    Pillow refuses), which `decode_bytes` then decodes, or reports, as always."""
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ("JPEG", "MPO") or image.mode not in ("RGB", "L"):
                return None
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # whatever is wrong with it, decode_bytes says so in a person's words
        return None
    ends_whole = image.format == "JPEG" and data.rstrip(b"\0").endswith(b"\xff\xd9")
    end = len(data) if ends_whole else first_image_end(data)
    if end is None:
        # cut short: Pillow, not a GPU decoder that may fill the missing rows with grey,
        # decides whether it is usable
        return None
    turn = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
    if turn in (5, 6, 7, 8):
        width, height = height, width
    captured = _captured_at(image)
    return JpegBytes(data[:end], turn, width, height, captured, image.format)


# In a scan's entropy-coded data 0xFF is followed by 0x00 (a stuffed byte), a restart marker
# (0xD0-0xD7) or more 0xFF; anything else is the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def first_image_end(data: bytes) -> int | None:
    """The offset just past the end-of-image marker of the first image in a JPEG file, found by
    walking its segments (an embedded thumbnail's marker is inside one and skipped); None when
    the file ends first."""
    at = 2
    while at + 2 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker == 0xD9:
            return at + 2
        elif 0xD0 <= marker <= 0xD7:
            at += 2
        elif at + 4 > len(data):
            return None
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
            if marker == 0xDA:  # a scan: its entropy-coded data runs to the next marker
                found = _NEXT_MARKER.search(data, at)
                if found is None:
                    return None
                at = found.start()
    return None


@dataclass(frozen=True)
class PixelRecipe:
    """The geometric half of a CLIP model's image preprocessing, reproduced with Pillow alone.

    Matches open_clip's eval transform (torchvision Resize + CenterCrop on a PIL image) pixel for
    pixel; the arithmetic half (scale to [0, 1], mean/std) runs batched in the encoder.
    """

    size: tuple[int, int]  # model input (height, width)
    resize: str = "shortest"  # "shortest": shorter side to size, then centre crop; "squash"
    interpolation: str = "bicubic"  # or "bilinear"

    @property
    def min_side(self) -> int:
        """The shorter side a decoded image needs so that resizing only ever shrinks it."""
        return max(self.size)


RESIZE_MODES = ("shortest", "squash")
MAX_ASPECT = 8  # longer side / shorter side kept before resizing (panoramas are 2-6)
_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


Box = tuple[int, int, int, int]  # left, top, right, bottom


@dataclass(frozen=True)
class Geometry:
    """How a picture of some size becomes the model input: what Pillow's `to_pixels` and the
    GPU's `crossmodal.model.jpeg_decode.shape` both do, box by box."""

    band: Box | None  # the middle kept before resizing, for pictures beyond MAX_ASPECT
    size: tuple[int, int]  # (width, height) to resize to
    crop: Box  # kept of the resized picture


def geometry(width: int, height: int, recipe: PixelRecipe) -> Geometry:
    """The `Geometry` of a `width` x `height` picture (upright) for `recipe`."""
    model_h, model_w = recipe.size
    if recipe.resize == "squash":
        return Geometry(None, (model_w, model_h), (0, 0, model_w, model_h))
    w, h = width, height
    short, long = (w, h) if w <= h else (h, w)
    band = None
    if long > MAX_ASPECT * short:
        # A 50,000 x 1 strip would be scaled to 11 million x 224 pixels before the crop keeps
        # its middle: keep only a middle band first, so memory follows the model input. Below
        # this aspect the result is open_clip's to the bit; above it, the same middle region.
        long = MAX_ASPECT * short
        if w > h:
            band = ((w - long) // 2, 0, (w - long) // 2 + long, h)
            w = long
        else:
            band = (0, (h - long) // 2, w, (h - long) // 2 + long)
            h = long
    # torchvision's rule for Resize(int): the shorter side becomes `height`, the longer is floored
    new_short, new_long = model_h, int(model_h * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    top = int(round((new_h - model_h) / 2.0))
    left = int(round((new_w - model_w) / 2.0))
    return Geometry(band, (new_w, new_h), (left, top, left + model_w, top + model_h))


def to_pixels(image: Image.Image, recipe: PixelRecipe) -> np.ndarray:
    """Resize and crop an RGB image to the model input: uint8, shape (height, width, 3)."""
    plan = geometry(*image.size, recipe)
    if plan.band is not None:
        image = image.crop(plan.band)
    if plan.size != image.size:
        image = image.resize(plan.size, _FILTERS[recipe.interpolation])
    if plan.crop != (0, 0, *image.size):
        image = image.crop(plan.crop)
    return np.asarray(image, np.uint8)


def _draft_request(width: int, height: int, min_side: int) -> tuple[int, int]:
    # draft() picks the largest DCT scale (1/2, 1/4, 1/8) that keeps the image at least this size
    scale = min_side / min(width, height)
    return max(1, int(width * scale)), max(1, int(height * scale))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB the way a person would expect to see it.

    Transparency is flattened onto white; 16- and 32-bit greyscale are scaled, not clipped;
    CMYK and palette images go through Pillow's own conversions.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image)), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    is_float = values.dtype.kind == "f"
    values = values.astype(np.float64)
    top = values.max(initial=0.0)
    if is_float and top <= 1.0:
        scaled = values * 255.0  # float images in [0, 1]
    elif top <= 255:
        scaled = values
    else:
        scaled = values / 257.0  # 16-bit range 0..65535 onto 0..255
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _captured_at(image: Image.Image) -> datetime | None:
    try:
        exif = image.getexif()
        raw = exif.get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL) or exif.get(EXIF_DATETIME)
    except Exception:  # malformed EXIF must never cost the photo
        return None
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def usable_cores() -> int:
    """CPU cores this process may run on (decoding workers, ONNX Runtime threads)."""
    try:
        return len(os.sched_getaffinity(0))  # respects taskset and container CPU limits
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
