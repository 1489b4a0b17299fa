"""Synthetic captioned shape images: deterministic, offline data with compositional structure.

Shape x colour x position x background, rendered with jitter; trains and tests the shipped model.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 10),
}
POSITIONS = ("left", "right", "top", "bottom", "center")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
_POSITION_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
_POSITION_XY = {  # centre of the shape as a fraction of the image side
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
IMAGE_SIZE = 64
RADIUS = (0.16, 0.22)  # shape radius range, as a fraction of the image side
JITTER = 0.06  # largest shift of the shape centre from its position's anchor, same unit
CAPTIONS_FILE = "captions.csv"


@dataclass(frozen=True, order=True)
class Scene:
    """One attribute combination; `label` names it, `caption` describes it fully."""

    shape: str
    colour: str
    position: str
    background: str

    @property
    def label(self) -> str:
        return f"{self.colour}-{self.shape}-{self.position}-{self.background}"

    @property
    def caption(self) -> str:
        return (
            f"{_article(self.colour)} {self.colour} {self.shape} {_POSITION_PHRASE[self.position]} "
            f"on a {self.background} background"
        )

    def partial_caption(self, rng: random.Random) -> str:
        """A caption naming a random non-empty subset of the attributes: "a shape on the left"."""
        keep = [False] * 4
        while not any(keep):
            keep = [rng.random() < 0.5 for _ in range(4)]
        colour, shape, position, background = keep
        words = ([self.colour] if colour else []) + [self.shape if shape else "shape"]
        text = f"{_article(words[0])} " + " ".join(words)
        if position:
            text += " " + _POSITION_PHRASE[self.position]
        if background:
            text += f" on a {self.background} background"
        return text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class SampleImage:
    """An image the generator wrote: its path, its scene, and its captions (the full one first)."""

    path: Path
    scene: Scene
    captions: tuple[str, ...]


def all_scenes() -> list[Scene]:
    return [
        Scene(shape, colour, position, background)
        for shape in SHAPES
        for colour in COLOURS
        for position in POSITIONS
        for background in BACKGROUNDS
    ]


def novel_scenes(count: int = 12, seed: int = 0) -> list[Scene]:
    """Combinations held out of training entirely, to measure compositional generalisation."""
    scenes = all_scenes()
    random.Random(seed).shuffle(scenes)
    return sorted(scenes[:count])


def render_scene(scene: Scene, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw one scene with jitter in size, placement, colour tone and background noise."""
    background = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 8.0, (size, size, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    fx, fy = _POSITION_XY[scene.position]
    cx = (fx + rng.uniform(-JITTER, JITTER)) * size
    cy = (fy + rng.uniform(-JITTER, JITTER)) * size
    radius = rng.uniform(*RADIUS) * size
    fill = tuple(int(np.clip(c + rng.randint(-20, 20), 0, 255)) for c in COLOURS[scene.colour])
    _draw_shape(ImageDraw.Draw(image), scene.shape, cx, cy, radius, fill, rng.uniform(0, 0.3))
    return image


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    fill: tuple[int, ...],
    turn: float,
) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon(_star_points(cx, cy + r * 0.15, r * 1.1, r * 1.1, 3, turn * 0.3), fill=fill)
    elif shape == "star":
        draw.polygon(_star_points(cx, cy, r * 1.15, r * 0.45, 5, turn), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def _star_points(
    cx: float, cy: float, outer: float, inner: float, tips: int, turn: float
) -> list[tuple[float, float]]:
    points = []
    step = np.pi / tips
    count = tips if outer == inner else tips * 2
    for i in range(count):
        radius = outer if outer == inner or i % 2 == 0 else inner
        angle = -np.pi / 2 + turn + i * (2 * step if outer == inner else step)
        points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
    return points


def write_captioned_set(
    folder: Path,
    scenes: Sequence[Scene],
    per_scene: int,
    seed: int,
    *,
    name: str = CAPTIONS_FILE,
    partial_captions: int = 0,
    size: int = IMAGE_SIZE,
) -> list[SampleImage]:
    """Render `per_scene` images of each scene into `folder/images/` and write `folder/name`.

    The captions file is a CSV with columns image, caption, label (one row per caption, image
    paths relative to the folder); `crossmodal.media.captions.read_captions` reads it back.
    """
    rng = random.Random(seed)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    samples = []
    for index, scene in enumerate(s for s in scenes for _ in range(per_scene)):
        path = images_dir / f"{stem}-{index:05d}-{scene.label}.png"
        render_scene(scene, rng, size).save(path)
        captions = (scene.caption, *(scene.partial_caption(rng) for _ in range(partial_captions)))
        samples.append(SampleImage(path, scene, captions))
    _write_csv(folder / name, folder, samples)
    return samples


def _write_csv(path: Path, root: Path, samples: Iterable[SampleImage]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption", "label"])
        for sample in samples:
            for caption in sample.captions:
                writer.writerow(
                    [sample.path.relative_to(root).as_posix(), caption, sample.scene.label]
                )


@dataclass(frozen=True)
class ShapesSplits:
    """Paths of the captions files of a generated train / held-out data set."""

    train: Path  # training renderings; novel combinations excluded
    heldout: Path  # new renderings of the training combinations, one full caption each
    novel: Path  # renderings of combinations never seen in training


def write_shapes_dataset(
    folder: Path,
    *,
    seed: int = 0,
    train_per_scene: int = 16,
    heldout_per_scene: int = 2,
    novel_count: int = 12,
    novel_per_scene: int = 4,
) -> ShapesSplits:
    """Generate the full train / held-out / novel-combination data set into `folder`."""
    novel = set(novel_scenes(novel_count, seed))
    seen = [s for s in all_scenes() if s not in novel]
    write_captioned_set(folder, seen, train_per_scene, seed, name="train.csv", partial_captions=2)
    write_captioned_set(folder, seen, heldout_per_scene, seed + 1, name="heldout.csv")
    write_captioned_set(folder, sorted(novel), novel_per_scene, seed + 2, name="novel.csv")
    return ShapesSplits(folder / "train.csv", folder / "heldout.csv", folder / "novel.csv")


def write_sample_collection(folder: Path, n: int = 24, seed: int = 0) -> list[tuple[Path, str]]:
    """Write `n` varied shape images (a small photo folder for demos) and return (path, caption)."""
    rng = random.Random(seed)
    scenes = rng.sample(all_scenes(), min(n, len(all_scenes())))
    scenes += [rng.choice(all_scenes()) for _ in range(n - len(scenes))]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for index, scene in enumerate(scenes):
        path = folder / f"{index:03d}-{scene.label}.png"
        render_scene(scene, rng).save(path)
        out.append((path, scene.caption))
    return out


@dataclass(frozen=True)
class SampleFolder:
    """A sample photo folder: shape images, and the label and caption files that go with it."""

    folder: Path
    images: tuple[Path, ...]
    labels: Path  # labels.txt: one "a red circle" per colour and shape
    captions: Path  # captions.txt: the captions of the images written


def write_sample(
    folder: str | os.PathLike[str], count: int = 48, seed: int = 0
) -> SampleFolder | None:
    """Write a sample folder of `count` shape images with labels.txt and captions.txt: what the
    shipped model (`SHIPPED_MODEL`) understands. Returns None, writing nothing, when the folder
    already holds images."""
    root = Path(folder).expanduser()
    if root.is_dir() and any(root.glob("*.png")):
        return None
    written = write_sample_collection(root, count, seed)
    labels, captions = root / "labels.txt", root / "captions.txt"
    labels.write_text("\n".join(sample_labels()) + "\n")
    captions.write_text("\n".join(sorted({caption for _, caption in written})) + "\n")
    return SampleFolder(root, tuple(path for path, _ in written), labels, captions)


def write_class_folders(
    folder: Path, attribute: str = "shape", per_class: int = 10, seed: int = 0
) -> dict[str, list[Path]]:
    """Write a folder-per-class image set, classes being the values of `attribute` (zero-shot eval).

    `attribute` is one of shape, colour, position, background; the other attributes vary randomly.
    """
    if attribute not in ("shape", "colour", "position", "background"):
        raise ValueError(
            f"unknown attribute {attribute!r}; choose shape, colour, position or background"
        )
    rng = random.Random(seed)
    scenes = all_scenes()
    classes: dict[str, list[Path]] = {}
    for value in sorted({getattr(s, attribute) for s in scenes}):
        pool = [s for s in scenes if getattr(s, attribute) == value]
        class_dir = folder / value
        class_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for index in range(per_class):
            path = class_dir / f"{index:03d}.png"
            render_scene(rng.choice(pool), rng).save(path)
            paths.append(path)
        classes[value] = paths
    return classes


def sample_labels() -> list[str]:
    """Labels for zero-shot classification of the sample collection: "a red circle", ..."""
    return [f"{_article(c)} {c} {s}" for s in SHAPES for c in COLOURS]
