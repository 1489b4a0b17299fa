"""An image encoder that runs an exported, int8-quantised image tower with ONNX Runtime: no
torch, no open_clip.

What `crossmodal index` encodes with on a CPU once the model's image tower has been exported
(`crossmodal.model.image_export`), because it starts in a tenth of a second instead of several
and encodes faster than torch in bf16 (measured on the 2-core build machine: BENCHMARKS.md).
It takes the same model-sized uint8 pixels as `ClipEncoder.encode_pixels`; text needs
`load_encoder` or the text export.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossmodal.errors import ModelLoadError
from crossmodal.media.images import PixelRecipe, to_pixels, usable_cores
from crossmodal.model import onnx_files
from crossmodal.model.onnx_files import checked_manifest, open_session
from crossmodal.model.specs import ModelIdentity

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# 4: uint8 weights on CPUs without VNNI (a model refused there for saturating is tried again);
# 3: ViTs rewritten (vit_rewrites); 2: uint8 pixels in; 1: normalised float32 in
FORMAT = 4
GRAPH_FILE, WEIGHTS_FILE = "image.onnx", "image.weights"


def export_folder(fingerprint: str, root: Path | None = None) -> Path:
    """Where the image export of the weights with this fingerprint lives."""
    return onnx_files.export_folder("image-encoders", fingerprint, root)


def open_image_export(
    spec: str, batch_size: int = 64, root: Path | None = None
) -> OnnxImageEncoder | None:
    """The exported image encoder of the model `spec`, or None when there is none, it is turned
    off, or it cannot be opened (the caller then loads the torch model)."""
    found = onnx_files.find_export("image-encoders", spec, root)
    if found is None:
        return None
    folder, identity = found
    try:
        return OnnxImageEncoder.open(folder, identity, batch_size)
    except ModelLoadError as exc:
        log.warning("%s; loading the torch model instead", exc)
        return None


class OnnxImageEncoder:
    """Images in, unit float32 vectors out, as `ClipEncoder.encode_images` gives them."""

    device = "cpu"

    def __init__(
        self,
        session: Any,
        identity: ModelIdentity,
        recipe: PixelRecipe,
        logit_scale: float,
        precision: str,
        batch_size: int = 64,
    ) -> None:
        self._session = session
        self.identity = identity
        self.pixel_recipe: PixelRecipe | None = recipe
        self.logit_scale = logit_scale
        self.precision = precision
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return self.identity.dim

    @classmethod
    def open(cls, folder: Path, identity: ModelIdentity, batch_size: int = 64) -> OnnxImageEncoder:
        """Load the export in `folder`, refusing one made from another model than `identity`."""
        manifest = checked_manifest(folder, identity, FORMAT, "image")
        try:
            recipe = PixelRecipe(
                **{**manifest["recipe"], "size": tuple(manifest["recipe"]["size"])}
            )
        except (KeyError, TypeError) as exc:
            raise ModelLoadError(f"no usable image export in {folder}: {exc}") from exc
        return cls(
            open_session(folder / GRAPH_FILE, threads=usable_cores(), prepack=True),  # as torch
            identity,
            recipe,
            float(manifest["logit_scale"]),
            str(manifest["precision"]),
            batch_size,
        )

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Encode a batch of model-sized uint8 pixels, shape (N, H, W, 3), from `to_pixels`."""
        if len(pixels) == 0:
            return np.empty((0, self.dim), np.float32)
        # scaled and normalised in the graph (image_export.pixel_tower)
        (vectors,) = self._session.run(None, {"pixels": np.ascontiguousarray(pixels, np.uint8)})
        return np.asarray(vectors, np.float32)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = [np.empty((0, self.dim), np.float32)]
        assert self.pixel_recipe is not None
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            rgb = [i if i.mode == "RGB" else i.convert("RGB") for i in chunk]  # as open_clip
            out.append(self.encode_pixels(np.stack([to_pixels(i, self.pixel_recipe) for i in rgb])))
        return np.concatenate(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise ModelLoadError(
            "this encoder runs the exported image tower only; load the model with "
            "load_encoder to encode texts"
        )
