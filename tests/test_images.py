from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from crossmodal.errors import ImageDecodeError
from crossmodal.media.images import content_hash, decode_bytes, decode_image, to_rgb


def _exif_rotated(path: Path, orientation: int) -> Path:
    # a 60x40 image, left half red, right half blue, stored sideways with an orientation tag
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (255, 0, 0)
    pixels[:, 30:] = (0, 0, 255)
    upright = Image.fromarray(pixels)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[36867] = "2019:07:14 18:30:05"
    stored.save(path, exif=exif, quality=95)
    return path


def test_exif_orientation_is_applied(tmp_path: Path):
    decoded = decode_image(_exif_rotated(tmp_path / "r.jpg", 6))
    assert decoded.image.size == (60, 40)
    assert (decoded.width, decoded.height) == (60, 40)
    pixels = np.asarray(decoded.image)
    assert pixels[20, 5, 0] > 200 and pixels[20, 5, 2] < 60  # left is red
    assert pixels[20, 55, 2] > 200 and pixels[20, 55, 0] < 60  # right is blue


@pytest.mark.parametrize("orientation", [None, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
def test_every_exif_orientation_decodes_as_pillow_turns_it(tmp_path: Path, orientation):
    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 256, (40, 60, 3), np.uint8))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    stored.save(tmp_path / "o.png", exif=exif)
    decoded = decode_image(tmp_path / "o.png")
    with Image.open(tmp_path / "o.png") as image:
        expected = ImageOps.exif_transpose(image)
    assert np.array_equal(np.asarray(decoded.image), np.asarray(expected))
    assert (decoded.width, decoded.height) == expected.size


def test_a_known_digest_is_not_computed_again(tmp_path: Path):
    data = (_exif_rotated(tmp_path / "r.jpg", 1)).read_bytes()
    assert decode_bytes(data).content_hash == content_hash(data)
    assert decode_bytes(data, digest="given").content_hash == "given"


def test_exif_capture_time_is_read(tmp_path: Path):
    decoded = decode_image(_exif_rotated(tmp_path / "r.jpg", 6))
    assert decoded.captured_at == datetime(2019, 7, 14, 18, 30, 5)
    assert decoded.format == "JPEG"


def test_palette_transparency_is_flattened_onto_white(tmp_path: Path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    pixels = np.asarray(decode_image(tmp_path / "p.png").image)
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[3, 3]) == (255, 255, 255)


def test_rgba_alpha_is_composited_on_white():
    image = Image.new("RGBA", (2, 1), (0, 0, 255, 0))
    image.putpixel((1, 0), (0, 0, 255, 255))
    pixels = np.asarray(to_rgb(image))
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[0, 1]) == (0, 0, 255)


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    decoded = decode_image(tmp_path / "c.jpg")
    r, g, b = np.asarray(decoded.image)[4, 4]
    assert decoded.image.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path: Path):
    values = np.array([[0, 32896, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    pixels = np.asarray(decode_image(tmp_path / "g16.png").image)
    assert [int(v) for v in pixels[0, :, 0]] == [0, 128, 255]


def test_animated_gif_uses_first_frame(tmp_path: Path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    r, _, b = np.asarray(decode_image(tmp_path / "a.gif").image)[4, 4]
    assert r > 200 and b < 60


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am text", "not a recognised image"),
        (b"<html><body>saved page</body></html>", "not a recognised image"),
    ],
)
def test_unreadable_files_raise_with_reason(tmp_path: Path, content: bytes, reason: str):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as info:
        decode_image(path)
    assert info.value.path == str(path)


def test_truncated_jpeg_is_reported_as_corrupt(tmp_path: Path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(tmp_path / "t.jpg")


def test_draft_decoding_keeps_at_least_the_requested_side(tmp_path: Path):
    Image.new("RGB", (2000, 1500), (10, 200, 10)).save(tmp_path / "big.jpg")
    decoded = decode_image(tmp_path / "big.jpg", min_side=224)
    assert (decoded.width, decoded.height) == (2000, 1500)  # the photo's real size is kept
    assert min(decoded.image.size) >= 224
    assert decoded.image.size[0] <= 1000  # decoded at a reduced scale


def test_same_bytes_give_same_content_hash(tmp_path: Path):
    Image.new("RGB", (5, 5), (1, 2, 3)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    assert (
        decode_image(tmp_path / "a.png").content_hash
        == decode_image(tmp_path / "b.png").content_hash
    )
