"""A second renderer of coloured shapes, written apart from `crossmodal.evaluate.synthetic`.

The shipped model was trained on `synthetic.render_scene`'s pictures; testing it only on more of
those would measure how well it learnt that generator. This module draws the same concepts with
different code: colours are hue / saturation / value ranges (what a person calls "orange"), not
the generator's RGB anchors; shapes are rasterised with numpy by point-in-shape tests on a
supersampled grid, not by PIL's polygon filler; shapes go anywhere on the canvas, at any size
and angle, filled or outlined, on plain or textured backgrounds; and the finished picture can be
blurred, noised or JPEG-compressed.
"""

from __future__ import annotations

import colorsys
import io
import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter

SHAPE_NAMES = ("circle", "square", "triangle", "star")
# hue in degrees (may wrap below 0), saturation and value in [0, 1]
COLOUR_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "red": ((-6.0, 5.0), (0.75, 0.95), (0.72, 0.92)),
    "orange": ((24.0, 33.0), (0.85, 1.0), (0.9, 1.0)),
    "yellow": ((50.0, 57.0), (0.8, 0.95), (0.88, 1.0)),
    "green": ((110.0, 135.0), (0.7, 0.9), (0.55, 0.75)),
    "blue": ((222.0, 234.0), (0.75, 0.92), (0.75, 0.92)),
    "purple": ((280.0, 292.0), (0.7, 0.85), (0.55, 0.72)),
}


@dataclass(frozen=True)
class Style:
    """How one row of the robustness suite draws: every field is one kind of variety."""

    size: int = 96  # canvas side in pixels
    radius: tuple[float, float] = (0.17, 0.28)  # shape radius, fraction of the side
    antialias: bool = True
    rotation: float = 12.0  # largest turn from upright, degrees
    outline: bool = False  # draw the edge only
    texture: bool = False  # textured instead of plain background
    colour_spread: float = 0.0  # widen each colour's ranges by this fraction of their width
    blur: float = 0.0  # Gaussian blur radius, pixels
    noise: float = 0.0  # Gaussian pixel noise, standard deviation in 0-255 units
    jpeg_quality: int | None = None  # re-encode as JPEG at this quality


def label_caption(colour: str, shape: str) -> str:
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


def pick_colour(name: str, rng: np.random.Generator, spread: float = 0.0) -> tuple[int, int, int]:
    (h0, h1), (s0, s1), (v0, v1) = COLOUR_RANGES[name]

    def widen(low: float, high: float, top: float) -> tuple[float, float]:
        extra = (high - low) * spread / 2
        return max(0.0, low - extra), min(top, high + extra)

    hue = rng.uniform(h0 - (h1 - h0) * spread / 2, h1 + (h1 - h0) * spread / 2) % 360
    red, green, blue = colorsys.hsv_to_rgb(
        hue / 360, rng.uniform(*widen(s0, s1, 1.0)), rng.uniform(*widen(v0, v1, 1.0))
    )
    return round(red * 255), round(green * 255), round(blue * 255)


def _inside(shape: str, x: np.ndarray, y: np.ndarray, r: float, turn: float) -> np.ndarray:
    """Which grid points (coordinates relative to the shape's centre) fall inside the shape."""
    if shape == "circle":
        return x * x + y * y <= r * r
    if shape in ("square", "triangle"):
        sides = 4 if shape == "square" else 3
        # a regular polygon is the intersection of half-planes at the apothem's distance
        apothem = r * math.cos(math.pi / sides) * (0.95 if sides == 4 else 1.15)
        keep = np.ones(x.shape, bool)
        for k in range(sides):
            angle = turn + math.pi / 2 + 2 * k * math.pi / sides  # the first edge at the bottom
            keep &= x * math.cos(angle) + y * math.sin(angle) <= apothem
        return keep
    if shape == "star":
        corners = []
        for k in range(10):
            radius = r * 1.1 if k % 2 == 0 else r * 0.45
            angle = turn - math.pi / 2 + k * math.pi / 5
            corners.append((radius * math.cos(angle), radius * math.sin(angle)))
        crossings = np.zeros(x.shape, bool)  # even-odd rule, a ray towards +x
        for (xa, ya), (xb, yb) in zip(corners, corners[1:] + corners[:1], strict=True):
            straddles = (ya > y) != (yb > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                at = xa + (y - ya) * (xb - xa) / (yb - ya)
            crossings ^= straddles & (x < at)
        return crossings
    raise ValueError(f"unknown shape {shape!r}")


def _coverage(shape: str, style: Style, cx: float, cy: float, r: float, turn: float) -> np.ndarray:
    factor = 4 if style.antialias else 1
    offsets = (np.arange(style.size * factor) + 0.5) / factor
    x, y = np.meshgrid(offsets - cx, offsets - cy)
    covered = _inside(shape, x, y, r, turn)
    if style.outline:
        covered &= ~_inside(shape, x, y, r - max(2.0, 0.18 * r), turn)
    return covered.reshape(style.size, factor, style.size, factor).mean(axis=(1, 3))


def _background(style: Style, rng: np.random.Generator) -> np.ndarray:
    level = rng.choice([rng.uniform(215, 250), rng.uniform(10, 45), rng.uniform(105, 150)])
    tint = rng.uniform(-8, 8, 3)  # near-neutral: a plain wall, a sheet of paper
    base = np.full((style.size, style.size, 3), level) + tint
    if not style.texture:
        return base
    n = style.size
    y, x = np.mgrid[0:n, 0:n] / n
    kind = rng.integers(4)
    if kind == 0:  # stripes at an angle
        angle = rng.uniform(0, math.pi)
        pattern = np.sign(np.sin((x * math.cos(angle) + y * math.sin(angle)) * rng.uniform(8, 20)))
    elif kind == 1:  # checks
        cells = rng.integers(4, 10)
        pattern = ((x * cells).astype(int) + (y * cells).astype(int)) % 2 * 2.0 - 1
    elif kind == 2:  # smooth gradient
        pattern = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) * 2
    else:  # coarse grain
        grain = rng.normal(0, 1, (n // 8 + 1, n // 8 + 1))
        pattern = np.kron(grain, np.ones((8, 8)))[:n, :n]
    return base + pattern[..., None] * rng.uniform(10, 22)


def draw(colour: str, shape: str, style: Style, rng: np.random.Generator) -> Image.Image:
    """One shape of the named colour, somewhere on a `style.size` square canvas."""
    n = style.size
    r = rng.uniform(*style.radius) * n
    margin = r * 1.15 + 1
    cx, cy = rng.uniform(margin, n - margin, 2)
    turn = math.radians(rng.uniform(-style.rotation, style.rotation))
    cover = _coverage(shape, style, cx, cy, r, turn)[..., None]
    paint = np.array(pick_colour(colour, rng, style.colour_spread), np.float64)
    pixels = _background(style, rng) * (1 - cover) + paint * cover
    if style.noise:
        pixels += rng.normal(0, style.noise, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    if style.blur:
        image = image.filter(ImageFilter.GaussianBlur(style.blur))
    if style.jpeg_quality is not None:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=style.jpeg_quality)
        image = Image.open(buffer)
        image.load()
    return image


BASELINE = Style()
# One row per kind of variety a user's own drawings would have; each changes one thing.
SUITE: dict[str, Style] = {
    "baseline (96 px, anti-aliased, filled, plain)": BASELINE,
    "drawn at 48 px": replace(BASELINE, size=48),
    "drawn at 256 px": replace(BASELINE, size=256),
    "aliased edges": replace(BASELINE, antialias=False),
    "small shapes": replace(BASELINE, radius=(0.09, 0.13)),
    "large shapes": replace(BASELINE, radius=(0.32, 0.4)),
    "any rotation": replace(BASELINE, rotation=180.0),
    "outlines": replace(BASELINE, outline=True, radius=(0.25, 0.35)),
    "textured background": replace(BASELINE, texture=True),
    "colour jitter": replace(BASELINE, colour_spread=0.6),
    "blur": replace(BASELINE, blur=1.5),
    "noise": replace(BASELINE, noise=14.0),
    "JPEG quality 40": replace(BASELINE, jpeg_quality=40),
}
