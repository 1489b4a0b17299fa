"""A text encoder that runs an exported text tower with ONNX Runtime: no torch, no open_clip.

What a text search loads instead of the whole model, when an export of the table's model exists
(`crossmodal.model.text_export`). It encodes texts only; image queries need `load_encoder`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossmodal.errors import CrossmodalError, ModelLoadError
from crossmodal.model.cache import cache_dir
from crossmodal.model.specs import ModelIdentity, fingerprint_of, parse_model_spec
from crossmodal.model.tokenizer import ClipTokenizer

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

FORMAT = 2  # 2: ONNX Runtime's optimised graph, weights in their own file
GRAPH_FILE, WEIGHTS_FILE = "text.onnx", "text.weights"
MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
DISABLE_ENV_VAR = "CROSSMODAL_NO_ONNX"  # set to 1: text searches always load the torch model


def export_disabled() -> bool:
    return os.environ.get(DISABLE_ENV_VAR, "").lower() in ("1", "true", "yes")


def export_folder(fingerprint: str, root: Path | None = None) -> Path:
    """Where the text export of the weights with this fingerprint lives."""
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return (root or cache_dir() / "text-encoders") / key


def open_text_export(spec: str, root: Path | None = None) -> OnnxTextEncoder | None:
    """The exported text encoder of the model `spec` loads now, or None when there is none (or
    exports are turned off): the caller then loads the torch model. Local weights are identified
    by their digests, so an export of weights that have since changed is never used."""
    if export_disabled():
        return None
    try:
        parsed = parse_model_spec(spec)
        folder = export_folder(fingerprint_of(parsed), root)
    except (CrossmodalError, OSError):
        return None  # the torch path loads it, or says what is wrong with the spec
    try:
        manifest = json.loads((folder / "export.json").read_text())
        made_from = ModelIdentity(**manifest["identity"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    identity = ModelIdentity(
        parsed.text, made_from.fingerprint, made_from.dim, made_from.preprocess
    )
    try:
        return OnnxTextEncoder.open(folder, identity)
    except ModelLoadError as exc:
        log.warning("%s; loading the torch model instead", exc)
        return None


class OnnxTextEncoder:
    """Texts in, unit float32 vectors out, as `ClipEncoder.encode_texts` gives them."""

    device = "cpu"
    precision = "fp32"

    def __init__(
        self, session: Any, tokenizer: ClipTokenizer, identity: ModelIdentity, logit_scale: float
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self.identity = identity
        self.logit_scale = logit_scale

    @property
    def dim(self) -> int:
        return self.identity.dim

    @classmethod
    def open(cls, folder: Path, identity: ModelIdentity) -> OnnxTextEncoder:
        """Load the export in `folder`, refusing one made from another model than `identity`."""
        try:
            manifest = json.loads((folder / "export.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"no usable text export in {folder}: {exc}") from exc
        if manifest.get("format") != FORMAT:
            raise ModelLoadError(
                f"the text export in {folder} is in an older format; the next search with the "
                "torch model makes it again"
            )
        made_from = ModelIdentity(**manifest.get("identity", {}))
        if not made_from.compatible_with(identity):
            raise ModelLoadError(
                f"the text export in {folder} was made from {made_from.spec} "
                f"({made_from.fingerprint}), not {identity.spec} ({identity.fingerprint})"
            )
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = min(4, os.cpu_count() or 1)
        # Optimised when it was exported: optimising again would only cost start-up time. Nor
        # are the weights repacked for the matrix kernels: that took 0.14 of the 0.16 s to open
        # ViT-B-32's text tower here, and 64 texts encode as fast without it.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.add_session_config_entry("session.disable_prepacking", "1")
        try:
            session = onnxruntime.InferenceSession(
                str(folder / GRAPH_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime raises its own untyped errors
            raise ModelLoadError(f"cannot open the text export in {folder}: {exc}") from exc
        tokenizer = ClipTokenizer(folder / MERGES_FILE, int(manifest["context_length"]))
        return cls(session, tokenizer, identity, float(manifest["logit_scale"]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), np.float32)
        (vectors,) = self._session.run(None, {"tokens": self._tokenizer(list(texts))})
        return np.asarray(vectors, np.float32)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise ModelLoadError(
            "this encoder runs the exported text tower only; load the model with "
            "load_encoder to encode images"
        )
