"""Synthetic captioned shape images: deterministic, offline data with compositional structure.

Shape x colour x position x background. `render_scene` draws one consistent look (held-out sets,
the sample folder); `render_varied` draws the same scene the many ways other people's pictures
do, and `Scene.varied_caption` words it the many ways people write, so that a model trained on
them learns the concepts rather than this generator.
"""

from __future__ import annotations

import colorsys
import csv
import io
import math
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

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
ANYWHERE_SHARE = 0.3  # of varied pictures: the shape anywhere, captioned without a position
ANYWHERE_POSITION = "anywhere"  # the position in the label of a picture with the shape anywhere


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

    def partial_caption(self, rng: random.Random, positions: bool = True) -> str:
        """A caption naming a random non-empty subset of the attributes: "a shape on the left"
        (never the position when `positions` is false)."""
        keep = [False] * 4
        while not any(keep):
            keep = [rng.random() < 0.5 for _ in range(4)]
            keep[2] = keep[2] and positions
        colour, shape, position, background = keep
        words = ([self.colour] if colour else []) + [self.shape if shape else "shape"]
        text = f"{_article(words[0])} " + " ".join(words)
        if position:
            text += " " + _POSITION_PHRASE[self.position]
        if background:
            text += f" on a {self.background} background"
        return text

    def varied_caption(
        self, rng: random.Random, partial: bool = False, anywhere: bool = False
    ) -> str:
        """The full caption (or, with `partial`, a partial one) in one of the ways people word
        it: "the" for "a", the position first, "a photo of ...", grey for gray, the middle for
        the center. No colour or shape synonyms: those are what a fine-tune teaches. A picture
        drawn `anywhere` gets captions that do not name a position."""
        if partial and rng.random() < 0.3:  # what people search by most: "a red circle"
            text = f"{_article(self.colour)} {self.colour} {self.shape}"
        else:
            text = self.partial_caption(rng, not anywhere) if partial else self.caption
            if anywhere:
                text = text.replace(f" {_POSITION_PHRASE[self.position]}", "")
        if rng.random() < 0.25:
            text = text.replace("gray", "grey").replace(
                "in the center", rng.choice(("in the middle", "in the centre"))
            )
        position = next((p for p in _POSITION_PHRASE.values() if f" {p}" in text), None)
        if position and rng.random() < 0.2:  # "on the left, a red circle on a white background"
            text = f"{position}, " + text.replace(f" {position}", "", 1)
        elif rng.random() < 0.25 and text.startswith(("a ", "an ")):
            text = "the " + text.split(" ", 1)[1]
        if rng.random() < 0.35 and text.startswith(("a ", "an ")):
            text = rng.choice(_PREFIXES) + text
        if rng.random() < 0.2:
            text += "."
        return text


_PREFIXES = ("a photo of ", "a picture of ", "a drawing of ", "an image of ")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class SampleImage:
    """An image the generator wrote: its path, its scene, and its captions (the full one first)."""

    path: Path
    scene: Scene
    captions: tuple[str, ...]
    anywhere: bool = False  # the shape was drawn anywhere, not at the scene's position

    @property
    def label(self) -> str:
        """The scene's label, with the position `ANYWHERE_POSITION` when the shape went anywhere."""
        return _label(self.scene, self.anywhere)


def _label(scene: Scene, anywhere: bool) -> str:
    if not anywhere:
        return scene.label
    return f"{scene.colour}-{scene.shape}-{ANYWHERE_POSITION}-{scene.background}"


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


def render_varied(scene: Scene, rng: random.Random, anywhere: bool = False) -> Image.Image:
    """Draw `scene` with the variety of pictures made elsewhere, each choice at random: canvas
    size 48-256 px, anti-aliased or aliased edges, shape size, any rotation, filled or outlined,
    plain or textured background of a jittered level, colour jitter within the colour's name,
    then perhaps blur, noise and JPEG compression (quality 40-95). Position stays the scene's,
    unless `anywhere`: then the shape goes anywhere it fits (caption it without a position)."""
    size = rng.randint(48, 256)
    scale = 4 if rng.random() < 0.6 else 1  # draw large and shrink: anti-aliased edges
    canvas = size * scale
    image = _varied_background(scene.background, canvas, rng)
    fx, fy = _POSITION_XY[scene.position]
    cx = (fx + rng.uniform(-1.5 * JITTER, 1.5 * JITTER)) * canvas
    cy = (fy + rng.uniform(-1.5 * JITTER, 1.5 * JITTER)) * canvas
    radius = math.exp(rng.uniform(math.log(0.07), math.log(0.4))) * canvas  # small ones too
    if anywhere:
        margin = min(1.2 * radius, canvas / 2)
        cx, cy = rng.uniform(margin, canvas - margin), rng.uniform(margin, canvas - margin)
    paint = _jittered_colour(COLOURS[scene.colour], rng)
    outline = max(2 * scale, round(rng.uniform(0.08, 0.25) * radius)) if rng.random() < 0.3 else 0
    draw = ImageDraw.Draw(image)
    turn = rng.uniform(0, 2 * math.pi)
    if scene.shape == "circle":
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if outline:
            draw.ellipse(box, outline=paint, width=outline)
        else:
            draw.ellipse(box, fill=paint)
    else:
        points = {
            "square": lambda: _star_points(cx, cy, radius * 1.2, radius * 1.2, 4, turn),
            "triangle": lambda: _star_points(cx, cy, radius * 1.1, radius * 1.1, 3, turn),
            "star": lambda: _star_points(cx, cy, radius * 1.15, radius * 0.45, 5, turn),
        }[scene.shape]()
        if outline:
            draw.polygon(points, outline=paint, width=outline)
        else:
            draw.polygon(points, fill=paint)
    if scale > 1:
        image = image.resize((size, size), Image.Resampling.BOX)
    if rng.random() < 0.25:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.02 * size)))
    if rng.random() < 0.3:
        sigma = rng.uniform(3, 20)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, sigma, (size, size, 3))
        image = Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=rng.randint(40, 95))
        image = Image.open(buffer).convert("RGB")
    return image


_BACKGROUND_LEVELS = {"white": (205, 255), "black": (0, 50), "gray": (100, 160)}


def _varied_background(name: str, size: int, rng: random.Random) -> Image.Image:
    """A plain background of a jittered, slightly tinted level, or a textured one around it."""
    level = rng.uniform(*_BACKGROUND_LEVELS[name])
    base = np.full((size, size, 3), level) + np.array([rng.uniform(-6, 6) for _ in range(3)])
    kind = rng.randrange(6)  # half plain, half one of three textures
    if kind == 3:  # soft blotches: low-resolution noise, smoothly enlarged
        cells = np.random.default_rng(rng.getrandbits(32)).normal(0, 1, (6, 6)).astype(np.float32)
        blotches = Image.fromarray(cells, "F").resize((size, size), Image.Resampling.BICUBIC)
        base += np.asarray(blotches)[..., None] * rng.uniform(6, 18)
    elif kind == 4:  # a linear gradient
        ramp = np.linspace(-1, 1, size)
        base += (ramp[None, :] if rng.random() < 0.5 else ramp[:, None])[..., None] * rng.uniform(
            8, 30
        )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    if kind == 5:  # ruled lines
        draw = ImageDraw.Draw(image)
        shade = int(np.clip(level + rng.choice((-1, 1)) * rng.uniform(12, 30), 0, 255))
        spacing = rng.uniform(0.05, 0.15) * size
        width = max(1, round(spacing * rng.uniform(0.1, 0.4)))
        offset = 0.0
        while offset < 2 * size:
            if rng.random() < 0.5:
                draw.line((offset, 0, offset - size, size), fill=(shade,) * 3, width=width)
            else:
                draw.line((0, offset, size, offset), fill=(shade,) * 3, width=width)
            offset += spacing
    return image


def _jittered_colour(anchor: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    """A colour a person would still call by the anchor's name: hue within 8 degrees, a little
    more or less saturated and bright."""
    hue, saturation, value = colorsys.rgb_to_hsv(*(c / 255 for c in anchor))
    hue = (hue + rng.uniform(-8, 8) / 360) % 1.0
    saturation = min(1.0, saturation * rng.uniform(0.75, 1.1))
    value = min(1.0, value * rng.uniform(0.8, 1.1))
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, saturation, value))  # type: ignore[return-value]


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
    variety: float = 0.0,
) -> list[SampleImage]:
    """Render `per_scene` images of each scene into `folder/images/` and write `folder/name`.

    A `variety` share of the images, picked at random, is drawn by `render_varied` (any size;
    an `ANYWHERE_SHARE` of them with the shape anywhere) and captioned by
    `Scene.varied_caption`; the rest share `render_scene`'s look at `size` px.

    The captions file is a CSV with columns image, caption, label (one row per caption, image
    paths relative to the folder); `crossmodal.media.captions.read_captions` reads it back.
    """
    rng = random.Random(seed)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    samples = []
    for index, scene in enumerate(s for s in scenes for _ in range(per_scene)):
        varied = bool(variety) and rng.random() < variety
        anywhere = varied and rng.random() < ANYWHERE_SHARE
        path = images_dir / f"{stem}-{index:05d}-{_label(scene, anywhere)}.png"
        if varied:
            render_varied(scene, rng, anywhere).save(path)
            captions = (
                scene.varied_caption(rng, anywhere=anywhere),
                *(
                    scene.varied_caption(rng, partial=True, anywhere=anywhere)
                    for _ in range(partial_captions)
                ),
            )
        else:
            render_scene(scene, rng, size).save(path)
            captions = (
                scene.caption,
                *(scene.partial_caption(rng) for _ in range(partial_captions)),
            )
        samples.append(SampleImage(path, scene, captions, anywhere))
    _write_csv(folder / name, folder, samples)
    return samples


def _write_csv(path: Path, root: Path, samples: Iterable[SampleImage]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption", "label"])
        for sample in samples:
            for caption in sample.captions:
                writer.writerow([sample.path.relative_to(root).as_posix(), caption, sample.label])


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
    train_variety: float = 0.0,
) -> ShapesSplits:
    """Generate the full train / held-out / novel-combination data set into `folder`.

    `train_variety` is the share of training images drawn and worded with variety (see
    `write_captioned_set`); the held-out and novel splits always have `render_scene`'s look.
    """
    novel = set(novel_scenes(novel_count, seed))
    seen = [s for s in all_scenes() if s not in novel]
    write_captioned_set(
        folder,
        seen,
        train_per_scene,
        seed,
        name="train.csv",
        partial_captions=2,
        variety=train_variety,
    )
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
