"""A text encoder that runs an exported text tower with ONNX Runtime: no torch, no open_clip.

What a text search loads instead of the whole model, when an export of the table's model exists
(`crossmodal.model.text_export`). It encodes texts only; image queries need `load_encoder`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossmodal.errors import ModelLoadError
from crossmodal.model import onnx_files
from crossmodal.model.onnx_files import checked_manifest, open_session
from crossmodal.model.specs import ModelIdentity
from crossmodal.model.tokenizer import ClipTokenizer

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

FORMAT = 2  # 2: ONNX Runtime's optimised graph, weights in their own file
GRAPH_FILE, WEIGHTS_FILE = "text.onnx", "text.weights"
MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"


def export_folder(fingerprint: str, root: Path | None = None) -> Path:
    """Where the text export of the weights with this fingerprint lives."""
    return onnx_files.export_folder("text-encoders", fingerprint, root)


def open_text_export(spec: str, root: Path | None = None) -> OnnxTextEncoder | None:
    """The exported text encoder of the model `spec` loads now, or None when there is none (or
    exports are turned off): the caller then loads the torch model. Local weights are identified
    by their digests, so an export of weights that have since changed is never used."""
    found = onnx_files.find_export("text-encoders", spec, root)
    if found is None:
        return None
    folder, identity = found
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
        manifest = checked_manifest(folder, identity, FORMAT, "text")
        session = open_session(folder / GRAPH_FILE)
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
