"""Export an encoder's text tower to ONNX, so a text search needs neither torch nor open_clip.

One folder per model identity in the cache: `text.onnx` (float32, any batch size, the graph
ONNX Runtime optimised once) with its weights beside it in `text.weights`, the tokenizer's merges
file, and `export.json` with the identity it was made from and the agreement with torch measured
when it was made. `crossmodal.model.text_onnx` loads it back.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import numpy as np

from crossmodal.errors import ModelLoadError
from crossmodal.model.encoder import ClipEncoder, EncoderConfig, load_encoder, tower
from crossmodal.model.onnx_files import (
    MANIFEST,
    UNSUPPORTED,
    export_settled,
    make_once,
    save_optimised,
    staged,
)
from crossmodal.model.text_onnx import (
    FORMAT,
    GRAPH_FILE,
    MERGES_FILE,
    WEIGHTS_FILE,
    OnnxTextEncoder,
    export_folder,
)
from crossmodal.model.tokenizer import ClipTokenizer

MIN_COSINE = 0.9999  # an export that agrees less with torch is not written
PROBES = (
    "a photo of a dog",
    "a red circle",
    "an orange star in the center on a gray background",
    "Sunset over the HARBOUR, long exposure; 2024",
    "caf\u00e9 \u6771\u4eac \U0001f303",
    "",
    "word " * 90,
)


def _tokenizer_config(encoder: ClipEncoder) -> tuple[Path, int]:
    """The merges file and context length, if `encoder`'s tokenizer is open_clip's default one."""
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    tokenizer = encoder.tokenizer
    if type(tokenizer) is not SimpleTokenizer or tokenizer.reduction_fn is not None:
        raise ModelLoadError(
            f"the text tower of {encoder.identity.spec} uses a {type(tokenizer).__name__}, "
            "which the ONNX text encoder does not reproduce; searches keep using torch"
        )
    return Path(default_bpe()), int(tokenizer.context_length)


def export_text_encoder(encoder: ClipEncoder, root: Path | None = None) -> Path:
    """Write the ONNX export of `encoder`'s text tower (see the module doc); return its folder.

    The export is checked before it is kept: the same tokens as open_clip's tokenizer on probe
    texts, and vectors with cosine >= MIN_COSINE to torch's float32 ones.
    """
    import torch

    merges, context = _tokenizer_config(encoder)
    ours = ClipTokenizer(merges, context)
    probes = list(PROBES)
    reference_tokens = encoder.tokenizer(probes).numpy()
    if not np.array_equal(ours(probes), reference_tokens):
        raise ModelLoadError(
            f"the tokenizer of {encoder.identity.spec} does not match crossmodal's; "
            "searches keep using torch"
        )
    if encoder.precision == "fp32":
        model = copy.deepcopy(encoder.model).cpu().eval()
    else:  # weights cast to bf16 or fp16 lost digits: export the float32 weights themselves
        model = load_encoder(encoder.identity.spec, EncoderConfig("cpu", "fp32")).model

    text_tower = tower(model, "text")
    tokens = torch.from_numpy(reference_tokens)
    with torch.inference_mode():
        expected = text_tower(tokens).numpy()
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        staged(export_folder(encoder.identity.fingerprint, root)) as staging,
    ):
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks it fixes
        torch.onnx.export(
            text_tower,
            (tokens,),
            str(staging / "traced.onnx"),
            input_names=["tokens"],
            output_names=["vectors"],
            dynamic_axes={"tokens": {0: "batch"}, "vectors": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        save_optimised(staging / "traced.onnx", staging, GRAPH_FILE, WEIGHTS_FILE)
        shutil.copyfile(merges, staging / MERGES_FILE)
        manifest = {
            "format": FORMAT,
            "identity": encoder.identity.to_dict(),
            "context_length": context,
            "logit_scale": encoder.logit_scale,
            "torch": torch.__version__,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        exported = OnnxTextEncoder.open(staging, encoder.identity)
        cosine = float((exported.encode_texts(probes) * expected).sum(axis=1).min())
        if cosine < MIN_COSINE:
            raise ModelLoadError(
                f"the ONNX text tower of {encoder.identity.spec} agrees with torch only to "
                f"cosine {cosine:.6f} (< {MIN_COSINE}); searches keep using torch"
            )
        manifest["min_cosine_to_torch"] = round(cosine, 8)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return export_folder(encoder.identity.fingerprint, root)


def has_text_export(encoder: ClipEncoder, root: Path | None = None) -> bool:
    """Whether the export was made in this version's format, or found impossible, for this
    model already. An export in an older format is made again."""
    return export_settled(export_folder(encoder.identity.fingerprint, root), FORMAT)


def ensure_text_export(encoder: ClipEncoder, root: Path | None = None) -> Path | None:
    """The export of `encoder`'s text tower, made now if missing; None for a model whose text
    tower cannot be exported (remembered, so it is tried once, not on every search)."""
    folder = export_folder(encoder.identity.fingerprint, root)
    if has_text_export(encoder, root):
        return None if (folder / UNSUPPORTED).is_file() else folder
    return make_once(folder, lambda: export_text_encoder(encoder, root), FORMAT)
