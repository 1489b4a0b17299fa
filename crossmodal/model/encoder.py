"""The encoder: the one module that talks to open_clip and torch.

Images (PIL, or model-sized uint8 pixels from worker processes) and texts in, L2-normalised
float32 vectors out, one forward pass per batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from crossmodal.errors import ModelLoadError
from crossmodal.media.images import RESIZE_MODES, JpegBytes, PixelRecipe, to_pixels
from crossmodal.model.jpeg_decode import decode_to_pixels
from crossmodal.model.specs import (
    ModelIdentity,
    ModelSpec,
    SpecKind,
    fingerprint_of,
    parse_model_spec,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
DEVICES = ("cuda", "mps", "cpu")


@dataclass(frozen=True)
class EncoderConfig:
    device: str = "auto"  # "auto" picks CUDA, then Apple MPS, then CPU; or name one
    precision: str = "auto"  # "auto": fp16 on CUDA, bf16 on CPUs with native bf16, else fp32
    batch_size: int = 64  # images (or texts) per forward pass
    threads: int | None = None  # torch's CPU threads for this process; None: torch's default


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    base = requested.split(":")[0]
    if base not in DEVICES:
        raise ModelLoadError(
            f"unknown device {requested!r}; choose one of auto, {', '.join(DEVICES)}"
        )
    if base == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu"
        )
    if base == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("device 'mps' was asked for but it is not available; use --device cpu")
    return requested


def resolve_precision(device: str, requested: str = "auto") -> str:
    """The precision to run at: fp16 on CUDA, bf16 on a CPU that computes it natively, else fp32.

    bf16 on a CPU without native support is emulated and slower than fp32, so "auto" avoids it.
    """
    if requested == "auto":
        if device.startswith("cuda"):
            return "fp16"
        return "bf16" if device == "cpu" and cpu_has_native_bf16() else "fp32"
    if requested not in PRECISIONS:
        raise ModelLoadError(
            f"unknown precision {requested!r}; choose one of auto, {', '.join(PRECISIONS)}"
        )
    if requested == "fp16" and device == "cpu":
        raise ModelLoadError("fp16 is not supported on CPU; use --precision bf16 or fp32")
    return requested


_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # x86: Cooper Lake / Zen 4 and later, Sapphire Rapids AMX
# x86 instructions that multiply signed by unsigned bytes into 32-bit sums; without them ONNX
# Runtime's int8 kernels add pairs into 16 bits first, which saturate (see image_export)
_INT8_DOT_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """This CPU's feature flags, per /proc/cpuinfo (empty where it cannot be read)."""
    if cpuinfo is None:
        if platform.system() != "Linux":
            return frozenset()  # no cheap, reliable check elsewhere: callers choose the safe way
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 and Arm spell the line differently
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bf16 instructions (x86 AVX-512 BF16 or AMX, Arm BF16), per /proc/cpuinfo."""
    flags = cpu_flags(cpuinfo)
    return bool(flags & _BF16_FLAGS) or "bf16" in flags


def cpu_has_int8_dot(cpuinfo: str | None = None) -> bool:
    """Whether this x86 CPU multiplies int8 by uint8 into 32-bit sums (VNNI or AMX), per
    /proc/cpuinfo. False on other CPUs and where it cannot be told."""
    return bool(cpu_flags(cpuinfo) & _INT8_DOT_FLAGS)


def _dtype(precision: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def identity_of_saved(folder: Path, trained_from: ModelIdentity) -> ModelIdentity:
    """The identity of a model folder just written from a model with `trained_from`'s
    dimension and preprocessing: what `load_encoder(folder)` will report."""
    spec = parse_model_spec(str(folder))
    return ModelIdentity(spec.text, fingerprint_of(spec), trained_from.dim, trained_from.preprocess)


def _describe_preprocess(cfg: dict[str, Any]) -> str:
    size = cfg.get("size")
    parts = [
        f"size={size}",
        f"resize={cfg.get('resize_mode', 'shortest')}",
        f"interp={cfg.get('interpolation', 'bicubic')}",
        "mean=" + ",".join(f"{v:.4f}" for v in cfg.get("mean", ())),
        "std=" + ",".join(f"{v:.4f}" for v in cfg.get("std", ())),
    ]
    return " ".join(parts)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ClipEncoder:
    """An open_clip model ready for inference. Create it with `load_encoder`."""

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        identity: ModelIdentity,
        device: str,
        precision: str,
        batch_size: int,
    ) -> None:
        self.model = model
        self.preprocess = preprocess  # PIL image -> CHW float tensor, open_clip's eval transform
        self.tokenizer = tokenizer
        self.identity = identity
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.logit_scale = float(model.logit_scale.exp().item())
        cfg = dict(model.visual.preprocess_cfg)
        # what worker processes need to prepare pixels without torch; None when open_clip's
        # transform for this model is one we do not reproduce (then images go through `preprocess`)
        self.pixel_recipe = _pixel_recipe(cfg)
        self._mean = tuple(float(v) for v in cfg.get("mean", ()))
        self._std = tuple(float(v) for v in cfg.get("std", ()))

    @property
    def dim(self) -> int:
        return self.identity.dim

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Encode a batch of model-sized uint8 pixels, shape (N, H, W, 3), from `to_pixels`.

        Only uint8 crosses from the host to the device; scaling and normalising happen there.
        """
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(pixels, np.uint8))
        if self.device.startswith("cuda"):
            batch = batch.pin_memory()  # lets the copy below run asynchronously
        return self._encode_uint8(batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2))

    def encode_jpegs(self, jpegs: Sequence[JpegBytes]) -> tuple[np.ndarray, list[int]]:
        """Decode JPEGs on this encoder's device (nvJPEG on CUDA) and encode them: the vectors
        of those decoded, in order, and the indices of those the decoder refused, for the caller
        to decode another way. Only the compressed bytes cross from the host to the device."""
        if self.pixel_recipe is None:
            raise ModelLoadError(
                f"{self.identity.spec}: its preprocessing is not one crossmodal reproduces, so "
                "its JPEGs cannot be decoded on the device; decode them with Pillow instead"
            )
        out = [np.empty((0, self.dim), np.float32)]
        refused: list[int] = []
        for start in range(0, len(jpegs), self.batch_size):
            chunk = jpegs[start : start + self.batch_size]
            pixels, missed = decode_to_pixels(chunk, self.pixel_recipe, self.device)
            refused.extend(start + i for i in missed)
            if len(pixels):
                out.append(self._encode_uint8(pixels))
        return np.concatenate(out), refused

    def _encode_uint8(self, batch: torch.Tensor) -> np.ndarray:
        """Encode model-sized uint8 pixels already on the device, shape (N, 3, H, W)."""
        import torch

        with torch.inference_mode():
            batch = batch.float()
            mean = torch.tensor(self._mean, device=batch.device).view(1, -1, 1, 1)
            std = torch.tensor(self._std, device=batch.device).view(1, -1, 1, 1)
            # the same operations, in the same order, as ToTensor + Normalize
            batch = batch.div_(255.0).sub_(mean).div_(std)
            return self._encode_tensor(batch)

    def _encode_tensor(self, batch: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = batch.to(self.device, dtype=_dtype(self.precision), non_blocking=True)
            return _normalised(self.model.encode_image(batch))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        out = [np.empty((0, self.dim), np.float32)]
        recipe = self.pixel_recipe
        for chunk in _batches(images, self.batch_size):
            if recipe is not None:
                rgb = [i if i.mode == "RGB" else i.convert("RGB") for i in chunk]  # as open_clip
                out.append(self.encode_pixels(np.stack([to_pixels(i, recipe) for i in rgb])))
            else:
                out.append(self._encode_tensor(torch.stack([self.preprocess(i) for i in chunk])))
        return np.concatenate(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = [np.empty((0, self.dim), np.float32)]
        with torch.inference_mode():
            for chunk in _batches(list(texts), self.batch_size):
                tokens = self.tokenizer(list(chunk)).to(self.device)
                out.append(_normalised(self.model.encode_text(tokens)))
        return np.concatenate(out)


def tower(model: Any, which: Literal["image", "text"]) -> torch.nn.Module:
    """One tower of an open_clip model ("image" or "text") as a module that returns unit
    vectors: what the ONNX exports trace."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            encode = self.clip.encode_image if which == "image" else self.clip.encode_text
            return torch.nn.functional.normalize(encode(batch), dim=-1)

    return Tower().eval()


def _pixel_recipe(cfg: dict[str, Any]) -> PixelRecipe | None:
    size = cfg.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    resize = cfg.get("resize_mode") or "shortest"
    interpolation = cfg.get("interpolation") or "bicubic"
    if resize not in RESIZE_MODES or interpolation not in ("bicubic", "bilinear"):
        return None
    if len(cfg.get("mean", ())) != 3 or len(cfg.get("std", ())) != 3:
        return None
    if resize == "shortest" and height != width:
        return None  # open_clip keeps the aspect ratio differently for non-square inputs
    return PixelRecipe((height, width), resize, interpolation)


def _normalised(features: torch.Tensor) -> np.ndarray:
    import torch

    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy().astype(np.float32, copy=False)


def load_encoder(spec: str | ModelSpec, config: EncoderConfig | None = None) -> ClipEncoder:
    """Create the model, its preprocessing and tokenizer on the chosen device and precision."""
    import open_clip
    import torch

    config = config or EncoderConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    device = resolve_device(config.device)
    precision = resolve_precision(device, config.precision)
    downloads = parsed.kind in (SpecKind.PRETRAINED, SpecKind.HF_HUB)
    offline = downloads and not hub_reachable()
    try:
        with _hub_offline(offline):
            model, _, preprocess = open_clip.create_model_and_transforms(
                parsed.open_clip_name,
                pretrained=parsed.open_clip_pretrained,
                device=device,
                weights_only=True,  # never execute code from a checkpoint
            )
            tokenizer = open_clip.get_tokenizer(parsed.open_clip_name)
    except Exception as exc:  # open_clip raises many kinds; the user needs one clear message
        if offline:
            raise ModelLoadError(_offline_hint(parsed)) from exc
        raise ModelLoadError(_load_hint(parsed, exc)) from exc
    model.eval()
    if precision != "fp32":
        model.to(dtype=_dtype(precision))
    with torch.inference_mode():
        dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
    identity = ModelIdentity(
        spec=parsed.text,
        fingerprint=fingerprint_of(parsed),
        dim=dim,
        preprocess=_describe_preprocess(dict(model.visual.preprocess_cfg)),
    )
    log.info("loaded %s on %s (%s)", parsed.text, device, precision)
    return ClipEncoder(model, preprocess, tokenizer, identity, device, precision, config.batch_size)


HUB_HOST = "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers at all; asked once, so an offline machine is told in
    seconds instead of after a minute of the hub client's retries."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Weights already in the local cache still load; nothing is requested from the network."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        hub_log.setLevel(level)


def _offline_hint(spec: ModelSpec) -> str:
    return (
        f"cannot load model {spec.text!r}: its weights are not in the local cache and "
        f"{HUB_HOST} cannot be reached (this machine looks offline). Connect once to download "
        "them, or use a local model: `--model DIR` (or the CROSSMODAL_MODEL variable) with a "
        "folder in open_clip's format, e.g. the shipped `--model shapes-tiny`, which "
        "understands the sample folder of `crossmodal sample`."
    )


def _load_hint(spec: ModelSpec, exc: Exception) -> str:
    message = f"could not load model {spec.text!r}: {type(exc).__name__}: {exc}"
    if spec.kind in (SpecKind.PRETRAINED, SpecKind.HF_HUB):
        message += (
            "\nIf this machine is offline, the weights cannot be downloaded: name a local model "
            "directory with --model DIR (or the CROSSMODAL_MODEL variable). "
            "List valid architecture:tag pairs with `crossmodal models`."
        )
    return message


def save_model_dir(
    model: Any, model_cfg: dict[str, Any], path: Path, preprocess_cfg: dict[str, Any] | None = None
) -> Path:
    """Write `model` in open_clip's local model format: open_clip_config.json + safetensors.

    Any command accepts the directory back as `--model DIR`.
    """
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    (path / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path / "open_clip_model.safetensors"))
    return path


def create_model_from_config(model_cfg: dict[str, Any], seed: int = 0) -> Any:
    """A randomly initialised open_clip model for an architecture written as a config dict."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    return open_clip.CLIP(**model_cfg)


def list_pretrained() -> list[tuple[str, str]]:
    """Every (architecture, pretrained tag) pair open_clip knows how to download."""
    import open_clip

    return [(arch, tag) for arch, tag in open_clip.list_pretrained()]


def create_encoder_from_config(
    model_cfg: dict[str, Any],
    *,
    seed: int = 0,
    device: str = "cpu",
    preprocess_cfg: dict[str, Any] | None = None,
) -> ClipEncoder:
    """A randomly initialised model for an architecture config, wrapped like `load_encoder`'s.

    For training from scratch; its identity names the seed, since no weights file exists yet.
    """
    import open_clip

    model = create_model_from_config(model_cfg, seed).to(device)
    pp = open_clip.transform.merge_preprocess_dict(
        open_clip.transform.PreprocessCfg(), preprocess_cfg or {}
    )
    pp["size"] = model.visual.image_size
    open_clip.model.set_model_preprocess_cfg(model, pp)
    preprocess = open_clip.transform.image_transform_v2(
        open_clip.transform.PreprocessCfg(**pp), is_train=False
    )
    text_cfg = model_cfg.get("text_cfg", {})
    context_length = text_cfg.get("context_length", 77)
    if text_cfg.get("hf_tokenizer_name"):
        tokenizer = open_clip.tokenizer.HFTokenizer(
            text_cfg["hf_tokenizer_name"], context_length=context_length
        )
    else:
        tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    model.eval()
    identity = ModelIdentity(
        spec="scratch",
        fingerprint=f"random-init@seed={seed}",
        dim=int(model_cfg["embed_dim"]),
        preprocess=_describe_preprocess(pp),
    )
    return ClipEncoder(model, preprocess, tokenizer, identity, device, "fp32", 64)


def model_config_of(spec: str | ModelSpec) -> dict[str, Any]:
    """The open_clip architecture config (`model_cfg`) a spec loads, for saving a fine-tune of it."""
    import open_clip

    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if parsed.kind is SpecKind.LOCAL_DIR:
        assert parsed.path is not None
        return dict(json.loads((parsed.path / "open_clip_config.json").read_text())["model_cfg"])
    try:
        if parsed.kind is SpecKind.HF_HUB:
            from huggingface_hub import hf_hub_download

            config_file = hf_hub_download(parsed.text[len("hf-hub:") :], "open_clip_config.json")
            return dict(json.loads(Path(config_file).read_text())["model_cfg"])
        config = open_clip.get_model_config(parsed.open_clip_name)
    except Exception as exc:  # a hub lookup that fails offline, a malformed config
        raise ModelLoadError(_load_hint(parsed, exc)) from exc
    if config is None:
        raise ModelLoadError(f"open_clip has no architecture named {parsed.arch!r}")
    return dict(config)
