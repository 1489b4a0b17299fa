"""Both exported towers of a model as one encoder: images and texts with ONNX Runtime, no torch.

What a query that holds an image loads on a CPU (`search --image`, `classify`, `captions`, the
demo) once `crossmodal index` has exported the model's image tower and a text search its text
tower: it answers in about a second from the shell where the torch model takes several.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crossmodal.errors import ModelLoadError
from crossmodal.model.image_onnx import OnnxImageEncoder, open_image_export
from crossmodal.model.text_onnx import OnnxTextEncoder, open_text_export

if TYPE_CHECKING:
    from PIL import Image

    from crossmodal.media.images import PixelRecipe

log = logging.getLogger(__name__)


def open_exports(
    spec: str, batch_size: int = 64, root: Path | None = None
) -> ExportedEncoder | None:
    """The model `spec` as its two exported towers, or None unless both exist and open (the
    caller then loads the torch model)."""
    text = open_text_export(spec, root)
    if text is None:
        return None
    image = open_image_export(spec, batch_size, root)
    if image is None:
        return None
    try:
        return ExportedEncoder(image, text)
    except ModelLoadError as exc:
        log.warning("%s; loading the torch model instead", exc)
        return None


class ExportedEncoder:
    """An `Encoder` made of an exported image tower and an exported text tower of one model."""

    device = "cpu"

    def __init__(self, image: OnnxImageEncoder, text: OnnxTextEncoder) -> None:
        if image.identity.fingerprint != text.identity.fingerprint:
            raise ModelLoadError(
                f"the image export ({image.identity.fingerprint}) and the text export "
                f"({text.identity.fingerprint}) come from different weights"
            )
        self.image = image
        self.text = text
        self.identity = image.identity
        self.logit_scale = image.logit_scale
        self.precision = f"{image.precision} images, {text.precision} texts"
        self.pixel_recipe: PixelRecipe | None = image.pixel_recipe

    @property
    def dim(self) -> int:
        return self.identity.dim

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.image.encode_pixels(pixels)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.image.encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.text.encode_texts(texts)
