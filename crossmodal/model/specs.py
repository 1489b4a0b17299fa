"""Model specs and identities: which open_clip model a user means, and how a table remembers it.

Pure and light: parsing a spec never imports torch, so the CLI can validate `--model` instantly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from crossmodal.errors import ModelSpecError
from crossmodal.model.cache import file_digest

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
# The small model this package ships (6 MB): it understands the sample folder of coloured shapes
# that `crossmodal sample` writes, and works offline. Named by this spec, found in the package.
SHIPPED_MODEL = "shapes-tiny"
SHIPPED_MODEL_DIR = Path(__file__).parent.parent / "assets" / SHIPPED_MODEL
MODEL_ENV_VAR = "CROSSMODAL_MODEL"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


class SpecKind(str, Enum):
    PRETRAINED = "pretrained"  # open_clip architecture + pretrained tag (downloads on first use)
    HF_HUB = "hf-hub"  # open_clip model repo on the Hugging Face hub
    LOCAL_DIR = "local-dir"  # folder with open_clip_config.json and a weights file
    CHECKPOINT = "checkpoint"  # open_clip architecture + a local weights file


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. `text` is the canonical form, accepted back by `parse_model_spec`."""

    kind: SpecKind
    text: str
    arch: str | None = None  # open_clip architecture name, when the spec names one
    pretrained: str | None = None  # pretrained tag, or the checkpoint path for CHECKPOINT
    path: Path | None = None  # the local directory or checkpoint file

    @property
    def open_clip_name(self) -> str:
        """The `model_name` argument open_clip's factory expects."""
        if self.kind is SpecKind.HF_HUB:
            return self.text
        if self.kind is SpecKind.LOCAL_DIR:
            return f"local-dir:{self.path}"
        assert self.arch is not None
        return self.arch

    @property
    def open_clip_pretrained(self) -> str | None:
        if self.kind in (SpecKind.PRETRAINED, SpecKind.CHECKPOINT):
            return self.pretrained
        return None


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or os.sep in text or "/" in text


def parse_model_spec(spec: str) -> ModelSpec:
    """Parse `ARCH:TAG`, `hf-hub:ORG/REPO`, `[local-dir:]DIR` or `ARCH:FILE` into a ModelSpec."""
    text = spec.strip()
    if not text:
        raise ModelSpecError(spec, "the spec is empty")
    if text.startswith("hf-hub:"):
        repo = text[len("hf-hub:") :]
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ModelSpecError(spec, "a hub id has the form hf-hub:ORG/REPO")
        return ModelSpec(SpecKind.HF_HUB, text)
    if text.startswith("local-dir:"):
        return _local_dir(spec, text[len("local-dir:") :])
    if text == SHIPPED_MODEL:
        return ModelSpec(SpecKind.LOCAL_DIR, SHIPPED_MODEL, path=SHIPPED_MODEL_DIR)
    arch, sep, rest = text.partition(":")
    if not sep:
        if _looks_like_path(text) or Path(text).expanduser().is_dir():
            return _local_dir(spec, text)
        raise ModelSpecError(
            spec,
            f"{text!r} names no weights; add a pretrained tag (e.g. {text}:openai) "
            "or give the path of a local model directory",
        )
    if not arch or not rest:
        raise ModelSpecError(spec, "both sides of ':' must be non-empty")
    if _looks_like_path(arch):
        raise ModelSpecError(spec, f"{arch!r} is not an architecture name")
    if rest.lower().endswith(CHECKPOINT_SUFFIXES) or _looks_like_path(rest):
        path = Path(rest).expanduser().resolve()
        if not path.is_file():
            raise ModelSpecError(spec, f"checkpoint file {path} does not exist")
        return ModelSpec(
            SpecKind.CHECKPOINT, f"{arch}:{path}", arch=arch, pretrained=str(path), path=path
        )
    return ModelSpec(SpecKind.PRETRAINED, text, arch=arch, pretrained=rest)


def _local_dir(spec: str, raw: str) -> ModelSpec:
    if not raw:
        raise ModelSpecError(spec, "local-dir: needs a directory path")
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise ModelSpecError(spec, f"directory {path} does not exist")
    if not (path / "open_clip_config.json").is_file():
        raise ModelSpecError(spec, f"{path} has no open_clip_config.json")
    return ModelSpec(SpecKind.LOCAL_DIR, str(path), path=path)


def fingerprint_of(spec: ModelSpec) -> str:
    """What identifies the weights a spec loads: the spec for downloads, digests of local files
    (remembered in the cache while the files are unchanged, so loading does not re-hash them)."""
    if spec.kind is SpecKind.PRETRAINED:
        return spec.text
    if spec.kind is SpecKind.HF_HUB:
        return spec.text
    assert spec.path is not None
    if spec.kind is SpecKind.CHECKPOINT:
        return f"{spec.arch}@sha256:{file_digest(spec.path)}"
    digests = [
        file_digest(p)
        for p in sorted(spec.path.iterdir())
        if p.suffix in (".safetensors", ".bin", ".pth", ".pt", ".json")
    ]
    return "local@sha256:" + hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


def default_model_spec() -> str:
    """The model a user gets when they name none: $CROSSMODAL_MODEL, else the pretrained default."""
    return os.environ.get(MODEL_ENV_VAR) or DEFAULT_MODEL


@dataclass(frozen=True)
class ModelIdentity:
    """What a table records about the model that made its vectors.

    Two identities are compatible when fingerprint, dimension and preprocessing agree: the spec
    text may differ (a model directory that moved) without the vectors differing.
    """

    spec: str  # the canonical spec, what a user passes back as --model
    fingerprint: str  # pretrained tag, hub id, or a content hash of local weights
    dim: int  # embedding dimension
    preprocess: str  # a short description of image preprocessing (size, resize, mean/std)

    def compatible_with(self, other: ModelIdentity) -> bool:
        return (self.fingerprint, self.dim, self.preprocess) == (
            other.fingerprint,
            other.dim,
            other.preprocess,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "preprocess": self.preprocess,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelIdentity:
        return cls(
            str(data["spec"]), str(data["fingerprint"]), int(data["dim"]), str(data["preprocess"])
        )


class Encoder(Protocol):
    """What indexing and search need from an encoder; `crossmodal.model.encoder.ClipEncoder` is the real one.

    Both methods return float32 arrays of shape (n, dim) whose rows have unit L2 norm.
    """

    identity: ModelIdentity
    device: str
    precision: str
    logit_scale: float  # the temperature CLIP multiplies cosine similarities by before softmax

    @property
    def dim(self) -> int: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...
