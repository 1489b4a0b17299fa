"""Evaluation numbers on tiny hand-built sets with a deterministic fake encoder are exact."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossmodal.model.specs import ModelIdentity

FAKE_COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class ColourEncoder:
    """One-hot by dominant channel for images and by colour word for texts (zeros if none)."""

    identity = ModelIdentity("fake:colour", "fake", 3, "none")
    device = "cpu"
    precision = "fp32"
    logit_scale = 100.0

    @property
    def dim(self) -> int:
        return 3

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.zeros((len(images), 3), np.float32)
        for row, image in enumerate(images):
            out[row, int(np.asarray(image.convert("RGB")).reshape(-1, 3).mean(0).argmax())] = 1
        return out

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), 3), np.float32)
        for row, text in enumerate(texts):
            for column, name in enumerate(FAKE_COLOURS):
                if name in text:
                    out[row, column] = 1
        return out


@pytest.fixture
def colour_encoder() -> ColourEncoder:
    return ColourEncoder()


def solid(path: Path, colour: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), FAKE_COLOURS[colour]).save(path)
    return path


from crossmodal.evaluate.evaluation import (  # noqa: E402
    compression_study,
    default_dims,
    encode_captioned_set,
    evaluate_retrieval,
    evaluate_zero_shot,
    first_hit_ranks,
    recall_metrics,
)
from crossmodal.media.captions import read_captions, read_class_folders  # noqa: E402


def captioned_set(tmp_path: Path) -> Path:
    """Four images (red, green, blue, red) with one caption each, labelled by colour."""
    rows = ["image,caption,label"]
    for name, colour in (("a", "red"), ("b", "green"), ("c", "blue"), ("d", "red")):
        solid(tmp_path / f"{name}.png", colour)
        rows.append(f"{name}.png,a {colour} thing,{colour}")
    (tmp_path / "caps.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "caps.csv"


def test_first_hit_ranks_count_ties_against_the_query() -> None:
    scores = np.array([[0.9, 0.5, 0.1], [0.5, 0.5, 0.5], [0.1, 0.2, 0.3]])
    relevant = np.array([[True, False, False], [False, True, False], [True, True, False]])
    assert first_hit_ranks(scores, relevant).tolist() == [1, 3, 2]


def test_recall_by_image_counts_identical_twins_as_misses(
    tmp_path: Path, colour_encoder: ColourEncoder
) -> None:
    report = evaluate_retrieval(colour_encoder, read_captions(captioned_set(tmp_path)))
    # the two red images (and their two identical captions) tie, so each red query ranks 2nd
    assert report.text_to_image.recall == ((1, 0.5), (5, 1.0), (10, 1.0))
    assert report.text_to_image.mean_rank == 1.5
    assert report.text_to_image.median_rank == 1.5
    assert report.text_to_image.chance_r1 == 0.25
    assert report.image_to_text.recall == ((1, 0.5), (5, 1.0), (10, 1.0))
    assert (report.images, report.captions, report.match) == (4, 4, "image")


def test_recall_by_label_accepts_any_image_of_the_combination(
    tmp_path: Path, colour_encoder: ColourEncoder
) -> None:
    report = evaluate_retrieval(
        colour_encoder, read_captions(captioned_set(tmp_path)), match="label", ks=(1,)
    )
    assert report.text_to_image.recall == ((1, 1.0),)
    assert report.text_to_image.chance_r1 == (2 / 4 + 1 / 4 + 1 / 4 + 2 / 4) / 4
    assert report.to_dict()["image_to_text"] == {
        "queries": 4,
        "R@1": 1.0,
        "mean_rank": 1.0,
        "median_rank": 1.0,
        "chance_R@1": 0.375,
    }


def test_recall_with_several_captions_per_image_hits_on_any_caption() -> None:
    images = np.eye(3, dtype=np.float32)
    texts = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]], np.float32)
    # image 0 owns captions 0 and 1 (the second one is wrong), image 1 owns 2, image 2 owns 3
    metrics = recall_metrics(images, texts, (0, 1, 2), (0, 0, 1, 2), ks=(1,))
    # image 0 hits through its first caption; image 2 ties with image 0's wrong caption
    assert metrics.recall == ((1, 2 / 3),)
    t2i = recall_metrics(texts, images, (0, 0, 1, 2), (0, 1, 2), ks=(1, 5))
    assert t2i.recall == ((1, 0.75), (5, 1.0))
    assert t2i.mean_rank == (1 + 3 + 1 + 1) / 4


def test_zero_shot_accuracy_is_exact(tmp_path: Path, colour_encoder: ColourEncoder) -> None:
    for index, (folder, colour) in enumerate(
        [("red", "red"), ("red", "red"), ("red", "green"), ("green", "green"), ("blue", "blue")]
    ):
        solid(tmp_path / folder / f"{index}.png", colour)
    report = evaluate_zero_shot(
        colour_encoder, read_class_folders(tmp_path), templates=("a photo of a {}.", "a {} picture")
    )
    assert report.classes == ("blue", "green", "red")
    assert (report.images, report.top1, report.top5) == (5, 0.8, 1.0)
    assert report.chance_top1 == 1 / 3


def test_zero_shot_rejects_templates_without_a_slot(
    tmp_path: Path, colour_encoder: ColourEncoder
) -> None:
    solid(tmp_path / "red" / "1.png", "red")
    solid(tmp_path / "blue" / "1.png", "blue")
    with pytest.raises(ValueError, match="template"):
        evaluate_zero_shot(colour_encoder, read_class_folders(tmp_path), templates=("a photo",))


def test_compression_study_reports_recall_against_bytes(
    tmp_path: Path, colour_encoder: ColourEncoder
) -> None:
    # three red, two green, one blue image: PCA to two dimensions keeps red and green only
    rows = ["image,caption,label"]
    for index, colour in enumerate(["red", "red", "red", "green", "green", "blue"]):
        solid(tmp_path / f"{index}.png", colour)
        rows.append(f"{index}.png,{colour},{colour}")
    (tmp_path / "caps.csv").write_text("\n".join(rows) + "\n")
    encoded = encode_captioned_set(colour_encoder, read_captions(tmp_path / "caps.csv"), "label")
    study = compression_study(encoded, dims=[3, 2], ks=(1,))
    assert [(r.dim, r.precision, r.bytes_per_vector) for r in study] == [
        (3, "fp32", 12),
        (3, "fp16", 6),
        (2, "fp32", 8),
        (2, "fp16", 4),
    ]
    assert [r.text_to_image.at(1) for r in study] == [1.0, 1.0, 5 / 6, 5 / 6]
    # the blue image becomes a zero vector that ties with all five captions, so it ranks last
    assert study[2].image_to_text.mean_rank == (5 * 1 + 6) / 6


def test_default_dims_halve_down_to_eight() -> None:
    assert default_dims(64) == (64, 32, 16, 8)
    assert default_dims(3) == (3,)


def test_label_match_needs_labels(tmp_path: Path, colour_encoder: ColourEncoder) -> None:
    solid(tmp_path / "a.png", "red")
    (tmp_path / "caps.csv").write_text("image,caption\na.png,red\n")
    with pytest.raises(ValueError, match="label"):
        evaluate_retrieval(colour_encoder, read_captions(tmp_path / "caps.csv"), match="label")
