"""Export an encoder's image tower to ONNX, quantised to int8, so indexing needs no torch.

One folder per model identity in the cache: `image.onnx` (ONNX Runtime's optimised graph of the
dynamically quantised tower: int8 weights, activations quantised per batch) with its weights in
`image.weights`, and `export.json` with the identity, the pixel recipe and normalisation, and the
agreement with torch's float32 vectors measured when it was made, on the user's own photos.
An export that agrees less than MIN_MEAN_COSINE or MIN_TOP10 is not kept, and the model keeps
using torch. `crossmodal.model.image_onnx` loads it back.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.errors import ModelLoadError
from crossmodal.model.encoder import ClipEncoder, EncoderConfig, load_encoder
from crossmodal.model.image_onnx import (
    FORMAT,
    GRAPH_FILE,
    WEIGHTS_FILE,
    OnnxImageEncoder,
    export_folder,
)
from crossmodal.model.onnx_files import MANIFEST, UNSUPPORTED, save_optimised, staged

MIN_MEAN_COSINE = 0.999  # against torch float32, what bf16 + draft decoding is held to
MIN_TOP10 = 0.95  # overlap of each photo's 10 nearest photos
MIN_PROBES = 16  # photos needed to check an export on; fewer, and it waits for a later run


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest other rows that `a` and `b` agree on."""
    k = min(k, len(a) - 1)

    def top(vectors: np.ndarray) -> np.ndarray:
        scores = vectors @ vectors.T
        np.fill_diagonal(scores, -np.inf)
        return np.argsort(-scores, axis=1)[:, :k]

    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top(a), top(b), strict=True)]))


@contextlib.contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """onnxruntime.quantization gives its advice through the root logger, not a warning."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(before)


@contextlib.contextmanager
def _exportable_attention() -> Iterator[None]:
    """torch's fused inference attention has no ONNX form: trace the plain operators."""
    import torch

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def export_image_encoder(
    encoder: ClipEncoder, probes: np.ndarray, root: Path | None = None
) -> Path:
    """Write the int8 ONNX export of `encoder`'s image tower; return its folder.

    `probes`: model-sized uint8 pixels of at least MIN_PROBES photos, (N, H, W, 3), on which the
    export must agree with torch's float32 vectors (see the module doc) to be kept.
    """
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    recipe = encoder.pixel_recipe
    if recipe is None:
        raise ModelLoadError(
            f"the image preprocessing of {encoder.identity.spec} is one crossmodal does not "
            "reproduce without torch; indexing keeps using torch"
        )
    if len(probes) < MIN_PROBES:
        raise ModelLoadError(f"{len(probes)} photos are too few to check an export on")
    if encoder.precision == "fp32" and encoder.device == "cpu":
        reference = encoder
    else:  # weights cast to bf16 or fp16 lost digits: export the float32 weights themselves
        reference = load_encoder(encoder.identity.spec, EncoderConfig("cpu", "fp32"))
    expected = reference.encode_pixels(probes)
    model = copy.deepcopy(reference.model).cpu().eval()

    class ImageTower(torch.nn.Module):
        def __init__(self, clip: Any) -> None:
            super().__init__()
            self.clip = clip

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(self.clip.encode_image(pixels), dim=-1)

    cfg = dict(model.visual.preprocess_cfg)
    folder = export_folder(encoder.identity.fingerprint, root)
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        _exportable_attention(),
        staged(folder) as staging,
    ):
        warnings.simplefilter("ignore")  # the tracer's notes, the quantiser's advice
        torch.onnx.export(
            ImageTower(model).eval(),
            (torch.zeros(2, 3, *recipe.size),),
            str(staging / "traced.onnx"),
            input_names=["pixels"],
            output_names=["vectors"],
            dynamic_axes={"pixels": {0: "batch"}, "vectors": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        with _quiet_quantiser():
            quantize_dynamic(
                str(staging / "traced.onnx"),
                str(staging / "int8.onnx"),
                weight_type=QuantType.QInt8,
            )
        (staging / "traced.onnx").unlink()
        save_optimised(staging / "int8.onnx", staging, GRAPH_FILE, WEIGHTS_FILE)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "identity": encoder.identity.to_dict(),
            "recipe": {
                "size": list(recipe.size),
                "resize": recipe.resize,
                "interpolation": recipe.interpolation,
            },
            "mean": [float(v) for v in cfg["mean"]],
            "std": [float(v) for v in cfg["std"]],
            "logit_scale": encoder.logit_scale,
            "precision": "int8",
            "torch": torch.__version__,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        vectors = OnnxImageEncoder.open(staging, encoder.identity).encode_pixels(probes)
        cosine = (vectors * expected).sum(axis=1)
        overlap = neighbour_overlap(vectors, expected)
        agreement = {
            "photos": len(probes),
            "mean_cosine": round(float(cosine.mean()), 6),
            "min_cosine": round(float(cosine.min()), 6),
            "top10_overlap": round(overlap, 4),
        }
        if cosine.mean() < MIN_MEAN_COSINE or overlap < MIN_TOP10:
            raise ModelLoadError(
                f"the int8 image tower of {encoder.identity.spec} agrees with torch float32 "
                f"only to mean cosine {cosine.mean():.6f} and top-10 overlap {overlap:.3f} "
                f"(need {MIN_MEAN_COSINE} and {MIN_TOP10}); indexing keeps using torch"
            )
        manifest["agreement_with_torch_fp32"] = agreement
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def has_image_export(encoder: ClipEncoder, root: Path | None = None) -> bool:
    """Whether the export was made, or found unfit, for this model already."""
    folder = export_folder(encoder.identity.fingerprint, root)
    try:
        return json.loads((folder / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return (folder / UNSUPPORTED).is_file()


def ensure_image_export(
    encoder: ClipEncoder, probes: np.ndarray, root: Path | None = None
) -> Path | None:
    """The image export of `encoder`, made now if missing and there are photos enough to check
    it on; None while it is not (yet) made. A model whose export is unfit is remembered, so it
    is tried once."""
    folder = export_folder(encoder.identity.fingerprint, root)
    if has_image_export(encoder, root):
        return None if (folder / UNSUPPORTED).is_file() else folder
    if len(probes) < MIN_PROBES:
        return None  # a later run, with more photos, makes it
    try:
        return export_image_encoder(encoder, probes, root)
    except ModelLoadError as exc:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / UNSUPPORTED).write_text(json.dumps({"reason": str(exc)}) + "\n")
        return None
