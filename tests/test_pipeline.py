"""The streaming pipeline: decoding threads, bounded look-ahead, failures as data, exact pixels."""

import os
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from conftest import ColourEncoder
from PIL import Image

from crossmodal.indexing import IndexConfig, index_folder
from crossmodal.indexing.pipeline import Job, PipelineConfig, prepare_stream, worker_count
from crossmodal.media.images import PixelRecipe, decode_image, to_pixels
from crossmodal.model.encoder import (
    EncoderConfig,
    cpu_has_int8_dot,
    cpu_has_native_bf16,
    load_encoder,
    resolve_precision,
)
from crossmodal.store import Store


def _photo(path: Path, seed: int, size: tuple[int, int] = (320, 240)) -> Path:
    """A photo-like JPEG: smooth colour gradients plus grain, so resizing has work to do."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 255, (3, 4, 3), np.uint8))
    smooth = np.asarray(low.resize(size, Image.Resampling.BICUBIC), np.int16)
    grain = rng.normal(0, 8, smooth.shape[:2] + (1,)).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def _rows_and_vectors(store, encoder):
    table = store.images(encoder.identity)
    out = {}
    for row in table.rows():
        _, vector = table.get(row.path)
        out[row.name] = (row.width, row.height, row.format, row.content_hash, vector)
    return out


def test_workers_index_exactly_like_the_in_process_path(photos, tmp_path):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    results = []
    for workers in (0, 2):
        encoder = ColourEncoder()
        store = Store.open(tmp_path / f"db{workers}", create=True)
        report = index_folder(photos, store, encoder, IndexConfig(batch_size=4, workers=workers))
        assert (report.new, report.encoded, [Path(f.path).name for f in report.failed]) == (
            6,
            6,
            ["broken.jpg"],
        )
        results.append(_rows_and_vectors(store, encoder))
    assert results[0].keys() == results[1].keys()
    for name, (*meta, vector) in results[0].items():
        *other_meta, other_vector = results[1][name]
        assert meta == other_meta and vector.tolist() == other_vector.tolist()


def test_moves_and_touches_reuse_vectors_through_workers(photos, tmp_path):
    store = Store.open(tmp_path / "db", create=True)
    config = IndexConfig(batch_size=2, workers=2)
    index_folder(photos, store, ColourEncoder(), config)
    os.replace(photos / "green.png", photos / "trips" / "green-moved.png")
    os.utime(photos / "red.jpg", ns=(1, 1))
    encoder = ColourEncoder()
    report = index_folder(photos, store, encoder, config)
    assert (report.moved, report.unchanged, report.encoded, encoder.images_encoded) == (1, 5, 0, 0)


def test_a_second_copy_of_a_moved_photo_is_encoded_not_shared(photos, tmp_path):
    store = Store.open(tmp_path / "db", create=True)
    config = IndexConfig(workers=2)
    index_folder(photos, store, ColourEncoder(), config)
    data = (photos / "green.png").read_bytes()
    (photos / "green.png").unlink()
    (photos / "a-copy.png").write_bytes(data)
    (photos / "b-copy.png").write_bytes(data)
    report = index_folder(photos, store, ColourEncoder(), config)
    assert (report.new, report.moved, report.removed, report.encoded) == (1, 1, 0, 1)
    assert store.images(ColourEncoder().identity).count() == 7


def test_failures_inside_workers_come_back_in_order(tmp_path):
    paths = [_photo(tmp_path / f"{i:02}.jpg", i) for i in range(10)]
    (tmp_path / "03.jpg").write_bytes(b"garbage")
    (tmp_path / "07.jpg").write_bytes(b"")
    jobs = [Job(str(p)) for p in paths] + [Job(str(tmp_path / "missing.jpg"))]
    recipe = PixelRecipe((32, 32))
    with closing(prepare_stream(jobs, recipe, config=PipelineConfig(workers=2))) as stream:
        results = list(stream)
    assert [r.path for r in results] == [j.path for j in jobs]
    failed = {Path(r.path).name: r.error for r in results if r.error}
    assert failed["03.jpg"].startswith("not a recognised image format")
    assert failed["07.jpg"] == "empty file (0 bytes)"
    assert failed["missing.jpg"].startswith("cannot read file")
    good = [r for r in results if not r.error]
    assert len(good) == 8
    assert all(r.pixels.shape == (32, 32, 3) and r.pixels.dtype == np.uint8 for r in good)
    assert {(r.width, r.height, r.format) for r in good} == {(320, 240, "JPEG")}


def test_workers_read_no_further_ahead_than_the_lookahead(tmp_path):
    # only the first 8 files exist when reading starts; the rest appear after the first result,
    # so a worker that ran more than 8 files ahead would report them missing
    paths = [tmp_path / f"{i:02}.jpg" for i in range(24)]
    for i, path in enumerate(paths[:8]):
        _photo(path, i, (40, 30))
    jobs = [Job(str(p)) for p in paths]
    config = PipelineConfig(workers=2, lookahead=8)
    with closing(prepare_stream(jobs, PixelRecipe((16, 16)), config=config)) as stream:
        first = next(stream)
        time.sleep(0.5)  # time enough for eager workers to have read ahead
        for i, path in enumerate(paths[8:], start=8):
            _photo(path, i, (40, 30))
        rest = list(stream)
    assert [r.error for r in [first, *rest]] == [None] * 24


def test_closing_the_stream_early_decodes_nothing_more(tmp_path):
    paths = [_photo(tmp_path / f"{i:02}.jpg", i, (64, 48)) for i in range(40)]
    opened: list[str] = []
    import crossmodal.indexing.pipeline as pipeline

    real = pipeline.read_image_bytes

    def counting(path):
        opened.append(str(path))
        return real(path)

    pipeline.read_image_bytes = counting
    try:
        stream = prepare_stream(
            [Job(str(p)) for p in paths], PixelRecipe((16, 16)), config=PipelineConfig(2, 4)
        )
        next(stream)
        stream.close()
        time.sleep(0.2)
        seen = len(opened)
        time.sleep(0.3)
    finally:
        pipeline.read_image_bytes = real
    assert seen == len(opened) <= 1 + 4 + 2  # the one yielded, the look-ahead, two running
    assert not [t for t in threading.enumerate() if t.name.startswith("crossmodal-decode")]


def test_default_worker_count_is_one_thread_per_core():
    assert worker_count(PipelineConfig()) == len(os.sched_getaffinity(0))
    assert worker_count(PipelineConfig(workers=3)) == 3
    assert worker_count(PipelineConfig(workers=0)) == 0


def test_threads_that_only_read_for_the_encoders_decoder_are_fewer(monkeypatch):
    import crossmodal.indexing.pipeline as pipeline

    monkeypatch.setattr(pipeline, "usable_cores", lambda: 16)  # a GPU machine's cores
    assert worker_count(PipelineConfig()) == 16
    assert worker_count(PipelineConfig(jpegs_to_encoder=True)) == 4
    assert worker_count(PipelineConfig(workers=16, jpegs_to_encoder=True)) == 16
    # when they may decode JPEGs too, all cores; at most 4 of them read headers at once
    assert worker_count(PipelineConfig(jpegs_to_encoder=True, spill_after=64)) == 16
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 2)
    assert worker_count(PipelineConfig(jpegs_to_encoder=True)) == 2


@pytest.mark.parametrize(
    ("size", "recipe"),
    [
        ((640, 480), PixelRecipe((224, 224))),
        ((480, 640), PixelRecipe((224, 224))),
        ((301, 299), PixelRecipe((224, 224), interpolation="bilinear")),
        ((100, 30), PixelRecipe((32, 32))),  # upscaled
        ((224, 224), PixelRecipe((224, 224))),  # already the right size
        ((640, 480), PixelRecipe((64, 96), resize="squash")),
    ],
)
def test_worker_pixels_match_open_clip_preprocessing_exactly(size, recipe, tmp_path):
    import open_clip
    import torch

    image = decode_image(_photo(tmp_path / "p.jpg", 3, size)).image
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    transform = open_clip.image_transform(
        recipe.size if recipe.resize == "squash" else recipe.size[0],
        is_train=False,
        mean=mean,
        std=std,
        resize_mode=recipe.resize,
        interpolation=recipe.interpolation,
    )
    expected = transform(image)
    pixels = torch.from_numpy(np.array(to_pixels(image, recipe))).permute(2, 0, 1).float()
    ours = (
        pixels.div_(255.0)
        .sub_(torch.tensor(mean).view(3, 1, 1))
        .div_(torch.tensor(std).view(3, 1, 1))
    )
    assert ours.shape == expected.shape
    assert torch.equal(ours, expected)


def test_real_encoder_through_threads_stores_unit_vectors_equal_to_encode_images(
    tiny_model_dir, tmp_path
):
    encoder = load_encoder(str(tiny_model_dir), EncoderConfig("cpu", "fp32"))
    assert encoder.pixel_recipe == PixelRecipe((32, 32))
    for i in range(6):
        _photo(tmp_path / "photos" / f"{i}.jpg", i, (60 + i, 45))
    store = Store.open(tmp_path / "db", create=True)
    report = index_folder(tmp_path / "photos", store, encoder, IndexConfig(workers=2))
    assert report.encoded == 6
    table = store.images(encoder.identity)
    for i in range(6):
        path = tmp_path / "photos" / f"{i}.jpg"
        direct = encoder.encode_images([decode_image(path).image])[0]
        stored = table.get(str(path))[1]
        assert np.allclose(stored, direct, atol=1e-6)
        assert abs(float(np.linalg.norm(stored)) - 1.0) < 1e-5  # the real model, not a fake


def test_draft_decoding_keeps_large_jpegs_close_to_full_decoding(tiny_model_dir, tmp_path):
    encoder = load_encoder(str(tiny_model_dir), EncoderConfig("cpu", "fp32"))
    path = _photo(tmp_path / "big.jpg", 5, (1600, 1200))
    draft = decode_image(path, min_side=encoder.pixel_recipe.min_side)
    full = decode_image(path)
    assert draft.image.size == (200, 150)  # decoded at 1/8 scale
    assert (draft.width, draft.height) == (full.width, full.height) == (1600, 1200)
    cosine = float(encoder.encode_images([draft.image])[0] @ encoder.encode_images([full.image])[0])
    assert cosine > 0.99


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n", True),
        ("flags\t\t: fpu sse2 avx512f amx_tile amx_bf16 amx_int8\n", True),
        ("flags\t\t: fpu sse2 avx2 fma avx512f\n", False),
        ("Features\t: fp asimd sve bf16 i8mm\n", True),  # Arm (Graviton 3, Neoverse V1)
        ("Features\t: fp asimd evtstrm aes\n", False),
        ("", False),
    ],
)
def test_native_bf16_is_read_from_cpu_flags(cpuinfo, expected):
    assert cpu_has_native_bf16(cpuinfo) is expected


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16\n", True),
        ("flags\t\t: fpu sse2 avx2 avx_vnni\n", True),  # Alder Lake: VNNI without AVX-512
        ("flags\t\t: fpu sse2 avx512f amx_tile amx_int8\n", True),
        ("flags\t\t: fpu sse2 avx2 fma\n", False),  # the AVX2-only EPYC of 2026-12-04
        ("Features\t: fp asimd asimddp i8mm\n", False),  # Arm: not x86's kernels
        ("", False),
    ],
)
def test_int8_dot_products_are_read_from_cpu_flags(cpuinfo, expected):
    assert cpu_has_int8_dot(cpuinfo) is expected


def test_auto_precision_follows_the_hardware(monkeypatch):
    import crossmodal.model.encoder as encoder_module

    assert resolve_precision("cuda", "auto") == "fp16"
    assert resolve_precision("mps", "auto") == "fp32"
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("cpu", "auto") == "bf16"
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("cpu", "auto") == "fp32"
    assert resolve_precision("cpu", "bf16") == "bf16"  # an explicit choice is kept


def test_threads_decode_jpegs_themselves_while_the_encoder_has_a_backlog(tmp_path):
    paths = []
    for i in range(32):
        path = tmp_path / f"{i:02}.jpg"
        Image.new("RGB", (64, 48), (8 * i, 0, 0)).save(path, quality=95)
        paths.append(str(path))
    recipe = PixelRecipe((16, 16))
    jobs = [Job(p) for p in paths]

    def kinds(spill_after: int) -> list[str]:
        config = PipelineConfig(2, 32, jpegs_to_encoder=True, spill_after=spill_after)
        stream = prepare_stream(jobs, recipe, (), config)
        first = next(stream)
        time.sleep(0.5)  # a slow encoder: the threads finish every job meanwhile
        results = [first, *stream]
        assert [r.path for r in results] == paths
        assert all(r.error is None for r in results)
        return ["jpeg" if r.jpeg is not None else "pixels" for r in results]

    assert kinds(0) == ["jpeg"] * 32  # no limit: everything waits for the encoder
    spilled = kinds(4)
    # after 4 waiting (a few more where both threads checked at once), Pillow decodes the rest
    assert 4 <= spilled.count("jpeg") <= 8
    assert spilled.count("pixels") == 32 - spilled.count("jpeg")
