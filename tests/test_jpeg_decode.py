"""JPEGs decoded by the encoder on its device (nvJPEG on a GPU), tested through the same code on
the CPU: torchvision's CPU decoder stands in for nvJPEG; the geometry and the indexing around it
are the same."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ColourEncoder
from PIL import Image, ImageOps

from crossmodal.errors import CrossmodalError
from crossmodal.indexing import IndexConfig, index_folder
from crossmodal.indexing.pipeline import jpegs_to_encoder
from crossmodal.media.images import (
    EXIF_ORIENTATION,
    PixelRecipe,
    decode_bytes,
    probe_jpeg,
    to_pixels,
)
from crossmodal.model.encoder import EncoderConfig, load_encoder
from crossmodal.model.jpeg_decode import decode_to_pixels, decodes_jpegs, upright
from crossmodal.store import Store


def jpeg_bytes(image: Image.Image, orientation: int = 1, **save: object) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[EXIF_ORIENTATION] = orientation
    image.save(buffer, "JPEG", exif=exif, quality=95, **save)
    return buffer.getvalue()


def scene(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients and blocks: JPEG keeps them, so decoders differ only by rounding."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def clip(tiny_model_dir):
    return load_encoder(str(tiny_model_dir), EncoderConfig("cpu", "fp32", batch_size=4))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_turns_like_pillows_exif_transpose(orientation):
    import torch

    image = Image.fromarray(np.arange(5 * 3 * 3, dtype=np.uint8).reshape(3, 5, 3))
    image.getexif()[EXIF_ORIENTATION] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    assert np.array_equal(upright(tensor, orientation).permute(1, 2, 0).numpy(), expected)


@pytest.mark.parametrize(
    ("size", "recipe"),
    [
        ((640, 480), PixelRecipe((224, 224))),
        ((480, 640), PixelRecipe((224, 224))),
        ((300, 200), PixelRecipe((64, 64), interpolation="bilinear")),
        ((2000, 150), PixelRecipe((32, 32))),  # a strip: the middle band is kept
        ((640, 480), PixelRecipe((48, 64), resize="squash")),
        ((224, 224), PixelRecipe((224, 224))),  # already the model size: no resize at all
    ],
)
def test_device_pixels_match_pillows_full_decode(size, recipe):
    data = jpeg_bytes(scene(*size))
    expected = to_pixels(decode_bytes(data).image, recipe).astype(int)
    pixels, refused = decode_to_pixels([probe_jpeg(data)], recipe, "cpu")
    got = pixels[0].permute(1, 2, 0).numpy().astype(int)
    assert refused == []
    assert got.shape == expected.shape
    # two JPEG decoders and two resize implementations: off by a rounding step, never more
    assert np.abs(got - expected).max() <= 3
    assert np.abs(got - expected).mean() < 0.5


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_after_decoding(orientation):
    data = jpeg_bytes(scene(320, 240, seed=3), orientation=orientation)
    jpeg = probe_jpeg(data)
    turned = orientation in (5, 6, 7, 8)
    assert (jpeg.orientation, jpeg.width, jpeg.height) == (
        (orientation, 240, 320) if turned else (orientation, 320, 240)
    )
    recipe = PixelRecipe((48, 64), resize="squash")  # not square: a wrong turn cannot hide
    expected = to_pixels(decode_bytes(data).image, recipe).astype(int)  # Pillow turns it upright
    pixels, _ = decode_to_pixels([jpeg], recipe, "cpu")
    assert np.abs(pixels[0].permute(1, 2, 0).numpy().astype(int) - expected).mean() < 0.5


def test_only_whole_colour_or_grey_jpegs_go_to_the_device():
    rgb = jpeg_bytes(scene(64, 48))
    assert probe_jpeg(rgb) is not None
    assert probe_jpeg(jpeg_bytes(scene(64, 48).convert("L"))) is not None
    assert probe_jpeg(jpeg_bytes(scene(64, 48).convert("CMYK"))) is None  # Pillow converts it
    assert probe_jpeg(rgb[: len(rgb) // 2]) is None  # cut short: Pillow decides and reports
    png = io.BytesIO()
    scene(64, 48).save(png, "PNG")
    assert probe_jpeg(png.getvalue()) is None
    assert probe_jpeg(b"\xff\xd8\xff" + b"\0" * 40 + b"\xff\xd9") is None  # a header Pillow refuses


@pytest.mark.parametrize("progressive", [False, True])
def test_the_first_image_goes_to_the_device_without_what_follows_it(progressive):
    first = jpeg_bytes(scene(320, 240, seed=1), progressive=progressive)
    # a phone's motion photo: a video after the picture's end marker
    motion = probe_jpeg(first + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    assert (motion.data, motion.format) == (first, "JPEG")
    assert probe_jpeg(first[: len(first) - 100]) is None  # no end marker: cut short
    mpo = io.BytesIO()  # a stereo camera's two views, or an Ultra HDR gain map
    scene(320, 240, seed=1).save(
        mpo, "MPO", save_all=True, append_images=[scene(320, 240, seed=2)], progressive=progressive
    )
    probed = probe_jpeg(mpo.getvalue())
    assert probed.format == "MPO" and len(probed.data) < len(mpo.getvalue())
    recipe = PixelRecipe((64, 64))
    expected = to_pixels(decode_bytes(mpo.getvalue()).image, recipe).astype(int)  # the first view
    pixels, refused = decode_to_pixels([probed], recipe, "cpu")
    assert refused == []
    assert np.abs(pixels[0].permute(1, 2, 0).numpy().astype(int) - expected).mean() < 0.5


def test_a_jpeg_the_decoder_refuses_is_reported_back_not_dropped():
    recipe = PixelRecipe((32, 32))
    one, two = (probe_jpeg(jpeg_bytes(scene(64, 48, seed))) for seed in (1, 2))
    garbage = type(one)(b"\xff\xd8\xff not a jpeg after all \xff\xd9", 1, 64, 48, None)
    pixels, refused = decode_to_pixels([one, garbage, two], recipe, "cpu")
    assert refused == [1]
    # the batch was tried again one file at a time, and each kept its own pixels
    assert bool((pixels[0] == decode_to_pixels([one], recipe, "cpu")[0][0]).all())
    assert bool((pixels[1] == decode_to_pixels([two], recipe, "cpu")[0][0]).all())
    assert not bool((pixels[0] == pixels[1]).all())


def test_a_resize_that_fails_refuses_its_photos_instead_of_stopping(monkeypatch):
    import crossmodal.model.jpeg_decode as jpeg_decode

    original = jpeg_decode._resize

    def failing_on_big_ones(images, height, width, interpolation):
        if images.shape[-1] > 500:  # as the GPU's resize fails beyond its shared memory
            raise RuntimeError("Too much shared memory required")
        return original(images, height, width, interpolation)

    monkeypatch.setattr(jpeg_decode, "_resize", failing_on_big_ones)
    jpegs = [probe_jpeg(jpeg_bytes(scene(*size))) for size in [(300, 200), (640, 480), (320, 200)]]
    pixels, refused = decode_to_pixels(jpegs, PixelRecipe((32, 32)), "cpu")
    assert refused == [1]
    assert len(pixels) == 2


def test_a_downscale_beyond_the_resize_kernels_reach_is_box_filtered_first():
    data = jpeg_bytes(scene(6000, 4600))  # shorter side 20x the model's: a box filter first
    recipe = PixelRecipe((224, 224))
    expected = to_pixels(decode_bytes(data).image, recipe).astype(int)
    pixels, _ = decode_to_pixels([probe_jpeg(data)], recipe, "cpu")
    difference = np.abs(pixels[0].permute(1, 2, 0).numpy().astype(int) - expected)
    assert difference.max() <= 3 and difference.mean() < 0.5


def test_photos_the_device_refuses_are_decoded_by_pillow_and_counted_once(
    clip, tmp_path: Path, monkeypatch
):
    import crossmodal.model.jpeg_decode as jpeg_decode

    original = jpeg_decode._decode

    def refusing_wide_ones(jpegs, part, device):  # as nvJPEG refuses some unusual JPEGs
        images = original(jpegs, part, device)
        return [None if jpegs[i].width == 640 else im for i, im in zip(part, images, strict=True)]

    monkeypatch.setattr(jpeg_decode, "_decode", refusing_wide_ones)
    by_pillow = []
    encode_pixels = clip.encode_pixels

    def counting(pixels):
        by_pillow.append(len(pixels))
        return encode_pixels(pixels)

    monkeypatch.setattr(clip, "encode_pixels", counting)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, size in enumerate([(640, 480), (300, 200), (640, 400), (200, 300), (640, 640)]):
        (photos / f"p{i}.jpg").write_bytes(jpeg_bytes(scene(*size, seed=i)))
    scene(100, 80).save(photos / "p5.png")  # in the same batch as refused and decoded JPEGs
    store = Store.open(tmp_path / "db", create=True)
    report = index_folder(photos, store, clip, IndexConfig(batch_size=6, decoder="encoder"))
    assert (report.new, report.encoded, report.failed) == (6, 6, ())
    assert by_pillow == [4]  # the three refused JPEGs and the PNG; the other two on the device
    table = store.images(clip.identity)
    assert sorted(r.name for r in table.rows()) == [*(f"p{i}.jpg" for i in range(5)), "p5.png"]
    for name in ("p2.jpg", "p3.jpg", "p5.png"):  # each row holds its own photo's vector
        expected = clip.encode_images([Image.open(photos / name)])[0]
        assert float(table.get(str(photos / name))[1] @ expected) > 0.9999


def test_a_batch_beyond_the_pixel_budget_is_decoded_in_parts(monkeypatch):
    import crossmodal.model.jpeg_decode as jpeg_decode

    calls = []
    original = jpeg_decode._decode

    def counting(jpegs, part, device):
        calls.append(list(part))
        return original(jpegs, part, device)

    monkeypatch.setattr(jpeg_decode, "PIXEL_BUDGET", 64 * 48 * 2)
    monkeypatch.setattr(jpeg_decode, "_decode", counting)
    jpegs = [probe_jpeg(jpeg_bytes(scene(64, 48, seed))) for seed in range(5)]
    pixels, refused = decode_to_pixels(jpegs, PixelRecipe((32, 32)), "cpu")
    assert calls == [[0, 1], [2, 3], [4]]
    assert (len(pixels), refused) == (5, [])


def test_the_cpu_decodes_jpegs_for_itself():
    assert decodes_jpegs("cpu")


def test_auto_decodes_in_threads_on_a_cpu_and_encoder_is_refused_where_it_cannot(clip, encoder):
    assert not jpegs_to_encoder(clip, "auto")  # Pillow's reduced-size decoding wins on a CPU
    assert jpegs_to_encoder(clip, "encoder")
    assert not jpegs_to_encoder(clip, "threads")
    with pytest.raises(CrossmodalError, match="use decoder 'threads'"):
        jpegs_to_encoder(encoder, "encoder")  # the colour fake has no device decoder
    with pytest.raises(CrossmodalError, match="decoder must be one of auto, threads, encoder"):
        IndexConfig(decoder="gpu")


def test_the_encoders_decoder_is_refused_where_torchvision_cannot_decode(clip, monkeypatch):
    import crossmodal.model.jpeg_decode as jpeg_decode

    monkeypatch.setattr(jpeg_decode, "decodes_jpegs", lambda device: False)
    with pytest.raises(CrossmodalError, match="torchvision cannot decode JPEGs on cpu"):
        jpegs_to_encoder(clip, "encoder")


def test_the_ray_engine_refuses_the_encoders_decoder(clip, tmp_path):
    from crossmodal.indexing.on_ray import index_folder_on_ray

    store = Store.open(tmp_path / "db", create=True)
    with pytest.raises(CrossmodalError, match="the Ray engine's tasks decode with Pillow"):
        index_folder_on_ray(tmp_path, store, clip, IndexConfig(decoder="encoder"))


def test_indexing_with_the_encoders_decoder_stores_what_pillow_would(clip, tmp_path: Path):
    """Every row, count and failure is the same; vectors agree to the rounding of two decoders."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, size in enumerate([(640, 480), (480, 640), (1200, 900), (300, 300)]):
        (photos / f"p{i}.jpg").write_bytes(jpeg_bytes(scene(*size, seed=i)))
    (photos / "turned.jpg").write_bytes(jpeg_bytes(scene(640, 480, 7), orientation=8))
    (photos / "grey.jpg").write_bytes(jpeg_bytes(scene(320, 200, 8).convert("L")))
    (photos / "cmyk.jpg").write_bytes(jpeg_bytes(scene(320, 200, 9).convert("CMYK")))
    scene(200, 100, 10).save(photos / "plain.png")
    cut = jpeg_bytes(scene(640, 480, 11))
    (photos / "cut.jpg").write_bytes(cut[: len(cut) // 3])
    (photos / "empty.jpg").write_bytes(b"")

    results = {}
    for decoder in ("threads", "encoder"):
        store = Store.open(tmp_path / decoder, create=True)
        report = index_folder(photos, store, clip, IndexConfig(batch_size=4, decoder=decoder))
        table = store.images(clip.identity)
        rows = {r.name: (r.width, r.height, r.format) for r in table.rows()}
        vectors = {path: table.get(path)[1] for path in table.stored_files()}
        results[decoder] = (report, rows, vectors)
    (threads, rows_t, vectors_t), (device, rows_d, vectors_d) = results.values()
    assert (device.new, device.encoded) == (threads.new, threads.encoded) == (8, 8)
    assert [f.path for f in device.failed] == [f.path for f in threads.failed]
    assert {Path(f.path).name for f in device.failed} == {"cut.jpg", "empty.jpg"}
    assert rows_d == rows_t
    assert rows_d["turned.jpg"] == (480, 640, "JPEG")
    cosines = [float(vectors_d[p] @ v) for p, v in vectors_t.items()]
    # the threads decode large JPEGs at a reduced scale (draft), the device in full
    assert min(cosines) > 0.99
    again = index_folder(photos, store, clip, IndexConfig(batch_size=4, decoder="encoder"))
    assert (again.encoded, again.unchanged) == (0, 8)


def test_index_command_takes_the_decoder_and_refuses_it_with_ray(
    tiny_model_dir, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from crossmodal.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"p{i}.jpg").write_bytes(jpeg_bytes(scene(320, 240, seed=i)))
    common = ["--db", str(tmp_path / "db"), "--model", str(tiny_model_dir), "--json"]
    result = CliRunner().invoke(
        main, ["index", str(photos), *common, "--device", "cpu", "--decoder", "encoder"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["encoded"] == 3
    # where the model's int8 export would stand in (it cannot decode), the torch model is used
    import crossmodal.cli.indexing as indexing

    monkeypatch.setattr(indexing, "load_image_encoder", lambda *_: ColourEncoder())
    (photos / "p3.jpg").write_bytes(jpeg_bytes(scene(320, 240, seed=3)))
    result = CliRunner().invoke(
        main, ["index", str(photos), *common, "--device", "cpu", "--decoder", "encoder"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["encoded"] == 1
    result = CliRunner().invoke(
        main, ["index", str(photos), *common, "--engine", "ray", "--decoder", "threads"]
    )
    assert result.exit_code == 2
    assert "--decoder applies to --engine local" in result.output


def test_a_batch_of_mixed_sizes_comes_back_in_the_order_given():
    recipe = PixelRecipe((32, 32))
    jpegs = [
        probe_jpeg(jpeg_bytes(scene(*size, seed=i)))
        for i, size in enumerate([(640, 480), (300, 200), (640, 480), (200, 300), (640, 480)])
    ]
    together, _ = decode_to_pixels(jpegs, recipe, "cpu")
    alone = [decode_to_pixels([jpeg], recipe, "cpu")[0][0] for jpeg in jpegs]
    for got, expected in zip(together, alone, strict=True):
        assert bool((got == expected).all())
