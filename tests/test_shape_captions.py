"""`caption_fits`: which shape pictures a caption describes, as the generator words them."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossmodal.evaluate.shape_captions import caption_fits
from crossmodal.evaluate.synthetic import all_scenes, write_captioned_set
from crossmodal.media.captions import read_captions


@pytest.mark.parametrize(
    ("caption", "on_the_left", "anywhere"),
    [
        ("a red circle", True, True),
        ("the red circle on the left.", True, False),
        ("a photo of a shape on the left", True, False),
        ("on the left, a red circle on a white background", True, False),
        ("a shape on a white background", True, True),
        ("a photo", True, True),  # names nothing, so fits everything
        ("a red circle on a grey background", False, False),
        ("a red circle in the middle", False, False),
        ("a blue circle", False, False),
        ("a red square", False, False),
        ("a crimson circle", False, False),  # a word the generator does not use: no claim
    ],
)
def test_a_caption_fits_every_label_it_describes(
    caption: str, on_the_left: bool, anywhere: bool
) -> None:
    assert caption_fits(caption, "red-circle-left-white") is on_the_left
    assert caption_fits(caption, "red-circle-anywhere-white") is anywhere


@pytest.mark.parametrize(
    "caption",
    [
        "a green star in the middle on a grey background",
        "the green star in the centre.",
        "in the center, a green star on a gray background",
    ],
)
def test_the_generators_synonyms_read_as_the_label_words(caption: str) -> None:
    assert caption_fits(caption, "green-star-center-gray")
    assert not caption_fits(caption, "green-star-top-gray")


def test_a_label_not_in_the_generators_form_is_refused() -> None:
    with pytest.raises(ValueError, match="colour-shape-position-background"):
        caption_fits("a shape on the left", "red-circle")


def test_every_caption_the_generator_writes_fits_its_own_image_and_no_other_shape(
    tmp_path: Path,
) -> None:
    scenes = [s for s in all_scenes() if s.colour == "red"][::3]  # every position, background
    samples = write_captioned_set(
        tmp_path, scenes, per_scene=6, seed=2, partial_captions=2, variety=1.0
    )
    labels = {item.path: item.label for item in read_captions(tmp_path / "captions.csv").items}
    assert [labels[s.path] for s in samples] == [s.label for s in samples]
    assert {s.label.split("-")[2] for s in samples} == {
        "left", "right", "top", "bottom", "center", "anywhere"
    }  # fmt: skip
    assert all(s.label in s.path.name for s in samples)  # the file name says it too
    for sample in samples:
        assert all(caption_fits(c, sample.label) for c in sample.captions), sample
        other = "circle" if sample.scene.shape != "circle" else "star"
        wrong = sample.label.replace(sample.scene.shape, other)
        named = [c for c in sample.captions if sample.scene.shape in c]
        assert not any(caption_fits(c, wrong) for c in named), sample
