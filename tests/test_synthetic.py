"""The synthetic shapes generator is deterministic, captions match scenes, splits are disjoint."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossmodal.evaluate.synthetic import (
    COLOURS,
    Scene,
    all_scenes,
    render_scene,
    write_captioned_set,
    write_class_folders,
    write_sample_collection,
    write_shapes_dataset,
)
from crossmodal.media.captions import read_captions, read_class_folders


def test_captions_name_every_attribute_with_the_right_article() -> None:
    assert Scene("circle", "red", "left", "white").caption == (
        "a red circle on the left on a white background"
    )
    assert Scene("star", "orange", "center", "black").caption == (
        "an orange star in the center on a black background"
    )
    assert len(all_scenes()) == 4 * 6 * 5 * 3


def test_partial_captions_name_a_subset_of_the_attributes() -> None:
    rng = random.Random(0)
    scene = Scene("triangle", "blue", "top", "gray")
    captions = {scene.partial_caption(rng) for _ in range(200)}
    assert "a triangle" in captions and "a shape at the top" in captions
    assert "a blue triangle at the top on a gray background" in captions
    for caption in captions:
        words = set(caption.split())
        assert words <= set(scene.caption.split()) | {"shape"}
        assert words & {"blue", "triangle", "top", "gray"}


def test_rendering_is_deterministic_and_draws_the_colour_where_the_position_says() -> None:
    scene = Scene("square", "red", "right", "white")
    first = render_scene(scene, random.Random(7))
    assert first.tobytes() == render_scene(scene, random.Random(7)).tobytes()
    assert first.tobytes() != render_scene(scene, random.Random(8)).tobytes()
    pixels = np.asarray(first).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 100)
    columns = np.nonzero(red.any(axis=0))[0]
    assert columns.min() > first.width // 2 - 8 and red.sum() > 100


def test_captioned_set_round_trips_through_the_reader(tmp_path: Path) -> None:
    scenes = [Scene("circle", "red", "left", "white"), Scene("star", "green", "top", "black")]
    samples = write_captioned_set(tmp_path, scenes, per_scene=2, seed=1, partial_captions=1)
    dataset = read_captions(tmp_path / "captions.csv")
    assert [item.path for item in dataset.items] == [s.path for s in samples]
    assert [item.label for item in dataset.items] == [s.scene.label for s in samples]
    assert [item.captions for item in dataset.items] == [s.captions for s in samples]
    assert dataset.items[0].captions[0] == "a red circle on the left on a white background"
    assert Image.open(samples[0].path).size == (64, 64)


def test_same_seed_writes_identical_files(tmp_path: Path) -> None:
    one = write_sample_collection(tmp_path / "one", n=5, seed=3)
    two = write_sample_collection(tmp_path / "two", n=5, seed=3)
    assert [c for _, c in one] == [c for _, c in two]
    assert [p.read_bytes() for p, _ in one] == [p.read_bytes() for p, _ in two]
    assert [p.name for p, _ in one] != [
        p.name for p, _ in write_sample_collection(tmp_path / "three", n=5, seed=4)
    ]


def test_splits_hold_out_renderings_and_combinations(tmp_path: Path) -> None:
    splits = write_shapes_dataset(
        tmp_path, seed=0, train_per_scene=1, heldout_per_scene=1, novel_count=6, novel_per_scene=1
    )
    train, heldout, novel = (read_captions(p) for p in (splits.train, splits.heldout, splits.novel))
    train_labels = {item.label for item in train.items}
    assert len(train) == len(heldout) == 360 - 6
    assert {item.label for item in heldout.items} == train_labels
    assert len(novel) == 6 and not {item.label for item in novel.items} & train_labels
    assert not {i.path for i in train.items} & {i.path for i in heldout.items}
    assert all(len(item.captions) == 1 for item in heldout.items)
    assert all(len(item.captions) == 3 for item in train.items)


def test_class_folders_hold_one_attribute_per_folder(tmp_path: Path) -> None:
    classes = write_class_folders(tmp_path, "colour", per_class=2, seed=0)
    assert sorted(classes) == sorted(COLOURS)
    read = read_class_folders(tmp_path)
    assert read.classes == tuple(sorted(COLOURS)) and len(read.paths) == 12
    with pytest.raises(ValueError, match="attribute"):
        write_class_folders(tmp_path, "size")


def test_varied_captions_reword_but_never_rename() -> None:
    rng = random.Random(0)
    scene = Scene("circle", "red", "center", "gray")
    captions = {scene.varied_caption(rng) for _ in range(400)}
    assert {
        "a red circle in the center on a gray background",
        "the red circle in the center on a gray background",
        "in the center, a red circle on a gray background",
        "a photo of a red circle in the center on a gray background",
        "a red circle in the middle on a grey background.",
    } <= captions
    allowed = set(scene.caption.split()) | {
        "the", "center,", "photo", "picture", "drawing", "image", "of", "an",
        "grey", "middle", "centre", "middle,", "centre,", "background.",
    }  # fmt: skip
    for caption in captions:
        assert set(caption.split()) <= allowed, caption
        assert "red circle" in caption  # a full caption always names colour and shape
    partial = {scene.varied_caption(rng, partial=True) for _ in range(400)}
    assert "a drawing of a red shape" in partial and "the circle" in partial


def test_varied_rendering_changes_everything_but_the_scene() -> None:
    from crossmodal.evaluate.synthetic import render_varied

    scene = Scene("square", "blue", "left", "white")
    pictures = [render_varied(scene, random.Random(seed)) for seed in range(40)]
    assert render_varied(scene, random.Random(3)).tobytes() == pictures[3].tobytes()
    sizes = {p.width for p in pictures}
    assert min(sizes) >= 48 and max(sizes) <= 256 and len(sizes) > 20
    for picture in pictures:
        pixels = np.asarray(picture.resize((64, 64))).astype(int)
        blue = (pixels[..., 2] - pixels[..., 0] > 60) & (pixels[..., 2] - pixels[..., 1] > 40)
        assert blue.sum() > 4, "the shape is drawn in blue"
        assert np.median(np.nonzero(blue)[1]) < 32, "and on the left"


def test_a_variety_share_mixes_both_looks(tmp_path: Path) -> None:
    scenes = [Scene("circle", "red", "left", "white")] * 40
    write_captioned_set(tmp_path, scenes, per_scene=1, seed=0, variety=0.5)
    sizes = [Image.open(p).width for p in sorted((tmp_path / "images").iterdir())]
    assert 10 < sizes.count(64) < 30  # about half keep render_scene's 64 px
