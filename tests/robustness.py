"""The robustness suite: the shipped model on `second_renderer`'s drawings, one row per variety.

Each row draws every one of the 24 colour-shape labels `per_label` times and measures, at the
label level (any image of "a red circle" is a hit for that caption):
- text -> image R@1 over the 24 captions "a red circle", ...,
- image -> text R@1: each image's nearest of those 24 captions,
- zero-shot top-1 with prompt templates, through the project's own class-folder harness.
`scripts/train_shipped_model.py` records these figures in eval.json; the tests re-measure them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from second_renderer import COLOUR_RANGES, SHAPE_NAMES, SUITE, Style, draw, label_caption

from crossmodal.evaluate.evaluation import encode_image_files, evaluate_zero_shot, recall_metrics
from crossmodal.media.captions import read_class_folders
from crossmodal.model.specs import Encoder

ZERO_SHOT_TEMPLATES = ("a photo of a {}.", "a drawing of a {}.", "a {}.")
LABELS = tuple((colour, shape) for shape in SHAPE_NAMES for colour in COLOUR_RANGES)


@dataclass(frozen=True)
class RowFigures:
    images: int
    text_to_image_r1: float
    image_to_text_r1: float
    zero_shot_top1: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "images": self.images,
            "text_to_image_R@1": round(self.text_to_image_r1, 6),
            "image_to_text_R@1": round(self.image_to_text_r1, 6),
            "zero_shot_top1": round(self.zero_shot_top1, 6),
        }


def write_row(folder: Path, style: Style, per_label: int, seed: int) -> Path:
    """Draw every label `per_label` times into `folder/<colour>_<shape>/`; return `folder`."""
    rng = np.random.default_rng(seed)
    for colour, shape in LABELS:
        class_dir = folder / f"{colour}_{shape}"
        class_dir.mkdir(parents=True, exist_ok=True)
        for index in range(per_label):
            draw(colour, shape, style, rng).save(class_dir / f"{index:03d}.png")
    return folder


def measure_row(encoder: Encoder, folder: Path) -> RowFigures:
    dataset = read_class_folders(folder)  # classes are "red circle", ... in LABELS' sorted order
    captions = [label_caption(*name.split()) for name in dataset.classes]
    image_vectors = encode_image_files(encoder, dataset.paths)
    text_vectors = encoder.encode_texts(captions)
    classes = tuple(range(len(dataset.classes)))
    t2i = recall_metrics(text_vectors, image_vectors, classes, dataset.targets, (1,))
    i2t = recall_metrics(image_vectors, text_vectors, dataset.targets, classes, (1,))
    zero_shot = evaluate_zero_shot(encoder, dataset, ZERO_SHOT_TEMPLATES)
    return RowFigures(len(dataset.paths), t2i.at(1), i2t.at(1), zero_shot.top1)


def measure_suite(
    encoder: Encoder, folder: Path, per_label: int = 6, seed: int = 0
) -> dict[str, RowFigures]:
    """Every row of `SUITE`, each drawn with its own seed into a sub-folder of `folder`."""
    return {
        name: measure_row(
            encoder, write_row(folder / f"row-{index:02d}", style, per_label, seed + index)
        )
        for index, (name, style) in enumerate(SUITE.items())
    }
