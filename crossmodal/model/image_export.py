"""Export an encoder's image tower to ONNX, quantised to int8, so indexing needs no torch.

One folder per model identity in the cache: `image.onnx` (ONNX Runtime's optimised graph of the
dynamically quantised tower: int8 weights, activations quantised per batch; model-sized uint8
pixels in, unit vectors out) with its weights in `image.weights`, and `export.json` with the
identity, the pixel recipe, the normalisation (recorded; the graph applies it) and the
agreement with torch's float32 vectors measured when it was made, on the user's own photos.
An export whose vectors agree less than MIN_MEAN_COSINE, or whose top-10 neighbours (of each
photo, and of PROBE_TEXTS) overlap less than MIN_TOP10, is not kept: the model keeps using
torch. `crossmodal.model.image_onnx` loads it back.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossmodal.errors import ModelLoadError
from crossmodal.media.images import PixelRecipe
from crossmodal.model.encoder import (
    ClipEncoder,
    EncoderConfig,
    cpu_has_int8_dot,
    load_encoder,
    tower,
)
from crossmodal.model.image_onnx import (
    FORMAT,
    GRAPH_FILE,
    WEIGHTS_FILE,
    OnnxImageEncoder,
    export_folder,
)
from crossmodal.model.onnx_files import (
    MANIFEST,
    UNSUPPORTED,
    export_settled,
    make_once,
    save_optimised,
    staged,
)
from crossmodal.model.vit_rewrites import rewrite_vit

if TYPE_CHECKING:
    import torch

MIN_MEAN_COSINE = 0.999  # against torch float32, what bf16 + draft decoding is held to
MIN_TOP10 = 0.95  # overlap of the 10 nearest photos, of each photo and of each probe text
MIN_PROBES = 16  # photos needed to check an export on; fewer, and it waits for a later run


# Text queries an export's rankings are compared on: photos of everyday things, as people search.
PROBE_TEXTS = (
    "a dog", "a cat", "a beach", "mountains", "a city street at night", "a birthday party",
    "a forest", "a sunset", "a car", "a boat", "snow", "a bridge", "a portrait of a woman",
    "a wedding", "food on a plate", "flowers", "a river", "a bicycle", "a train", "a church",
)  # fmt: skip


def top_k_overlap(
    queries_a: np.ndarray,
    rows_a: np.ndarray,
    queries_b: np.ndarray,
    rows_b: np.ndarray,
    k: int = 10,
    *,
    skip_self: bool = False,
) -> float:
    """Mean share of each query's k nearest rows that two encodings of the same queries and
    rows agree on. `skip_self`: the queries are the rows, each left out of its own list."""
    k = min(k, len(rows_a) - (1 if skip_self else 0))

    def top(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
        scores = queries @ rows.T
        if skip_self:
            np.fill_diagonal(scores, -np.inf)
        return np.argsort(-scores, axis=1)[:, :k]

    pairs = zip(top(queries_a, rows_a), top(queries_b, rows_b), strict=True)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in pairs]))


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
    encoder: ClipEncoder,
    probes: np.ndarray,
    root: Path | None = None,
    *,
    bars: tuple[float, float] | None = None,
) -> Path:
    """Write the int8 ONNX export of `encoder`'s image tower; return its folder.

    `probes`: model-sized uint8 pixels of at least MIN_PROBES photos, (N, H, W, 3), on which the
    export must agree with torch's float32 vectors (see the module doc) to be kept. `bars`: the
    (mean cosine, top-10 overlap) it is held to, MIN_MEAN_COSINE and MIN_TOP10 unless given; a
    benchmark that times the export whatever its agreement passes (0, 0) and reads the figures
    from `export.json`.
    """
    import torch

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
    texts = reference.encode_texts(list(PROBE_TEXTS))
    # the caller's model is copied (the export changes it); one loaded here is used as is
    model = (copy.deepcopy(reference.model) if reference is encoder else reference.model).eval()

    cfg = dict(model.visual.preprocess_cfg)
    folder = export_folder(encoder.identity.fingerprint, root)
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        _exportable_attention(),
        staged(folder) as staging,
    ):
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks it fixes
        # uint8 weights where the CPU has no VNNI: ONNX Runtime's uint8 x int8 kernels then sum
        # pairs of products in 16 bits, which saturate. On the AVX2-only EPYC of 2026-12-04 the
        # tiny test ViT agreed with float32 to mean cosine 0.99616 with int8 weights and
        # 0.99995 with uint8 ones; with VNNI the signed kernels are exact and faster
        signed = cpu_has_int8_dot()
        build = lambda: pixel_tower(model, recipe, cfg["mean"], cfg["std"])  # noqa: E731
        _convert(torch, build, recipe, staging, signed_weights=signed)
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
            "weights": "int8" if signed else "uint8",
            "torch": torch.__version__,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        vectors = OnnxImageEncoder.open(staging, encoder.identity).encode_pixels(probes)
        cosine = (vectors * expected).sum(axis=1)
        by_image = top_k_overlap(vectors, vectors, expected, expected, skip_self=True)
        by_text = top_k_overlap(texts, vectors, texts, expected)
        agreement = {
            "photos": len(probes),
            "mean_cosine": round(float(cosine.mean()), 6),
            "min_cosine": round(float(cosine.min()), 6),
            "top10_overlap_image_queries": round(by_image, 4),
            "top10_overlap_text_queries": round(by_text, 4),
        }
        min_cosine, min_top10 = bars or (MIN_MEAN_COSINE, MIN_TOP10)
        if not (cosine.mean() >= min_cosine and min(by_image, by_text) >= min_top10):  # NaN too
            raise ModelLoadError(
                f"the int8 image tower of {encoder.identity.spec} agrees with torch float32 "
                f"only to mean cosine {cosine.mean():.6f} and top-10 overlaps of "
                f"{by_image:.4f} (photo queries) and {by_text:.4f} (text queries) on "
                f"{len(probes)} photos (need {min_cosine} and {min_top10}); indexing "
                "keeps using torch"
            )
        manifest["agreement_with_torch_fp32"] = agreement
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def pixel_tower(
    model: Any, recipe: PixelRecipe, mean: Sequence[float], std: Sequence[float]
) -> torch.nn.Module:
    """`model`'s image tower as the export runs it: model-sized uint8 pixels (N, H, W, 3) in,
    unit vectors out. Scaling and normalising happen in the graph, in ONNX Runtime's threads
    (numpy took 1.8 ms a photo of the indexing thread for them). open_clip's own ViT is
    rewritten into faster exact operators first (`vit_rewrites`). `model` is changed: pass a
    copy."""
    import torch

    rewrite_vit(model.visual, recipe.size)

    # (x / 255 - mean) / std as one multiply-add
    scale = torch.tensor([1.0 / (255.0 * float(s)) for s in std]).reshape(1, 3, 1, 1)
    shift = torch.tensor([-float(m) / float(s) for m, s in zip(mean, std, strict=True)])
    shift = shift.reshape(1, 3, 1, 1)

    class PixelTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = tower(model, "image")

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            chw = pixels.permute(0, 3, 1, 2).to(torch.float32)
            return self.tower(chw * scale + shift)  # type: ignore[no-any-return]

    return PixelTower().eval()


def _convert(
    torch: Any,
    build: Callable[[], Any],
    recipe: PixelRecipe,
    staging: Path,
    *,
    signed_weights: bool,
) -> None:
    """Build (a `pixel_tower`), trace, quantise and optimise the image tower into `staging`,
    with int8 weights if `signed_weights`, else uint8 ones. A
    failure of any of these (a rewrite that does not fit, an operator the tracer does not know,
    a tower over protobuf's 2 GB, ...) is a ModelLoadError, so the model is marked and keeps
    using torch; a full disk stays an OSError, to be tried again."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        torch.onnx.export(
            build(),
            (torch.zeros(2, *recipe.size, 3, dtype=torch.uint8),),
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
                weight_type=QuantType.QInt8 if signed_weights else QuantType.QUInt8,
            )
        (staging / "traced.onnx").unlink()
        save_optimised(staging / "int8.onnx", staging, GRAPH_FILE, WEIGHTS_FILE)
    except OSError:
        raise
    except Exception as exc:  # torch, onnx and ONNX Runtime each raise their own kinds
        raise ModelLoadError(f"the image tower could not be exported: {exc}") from exc


def unfit_reason(encoder: ClipEncoder, root: Path | None = None) -> str | None:
    """Why the export of this model was found unfit, if it was."""
    marker = export_folder(encoder.identity.fingerprint, root) / UNSUPPORTED
    try:
        return str(json.loads(marker.read_text())["reason"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def has_image_export(encoder: ClipEncoder, root: Path | None = None) -> bool:
    """Whether the export was made, or found unfit, for this model already."""
    return export_settled(export_folder(encoder.identity.fingerprint, root), FORMAT)


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
    return make_once(folder, lambda: export_image_encoder(encoder, probes, root), FORMAT)
