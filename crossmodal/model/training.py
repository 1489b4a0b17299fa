"""Contrastive (CLIP loss) fine-tuning of an encoder on a captioned image set.

Encoder + CaptionedSet in, a model directory in open_clip's local format out (`--model DIR`).
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossmodal.errors import TrainingError
from crossmodal.media.captions import CaptionedSet
from crossmodal.model.encoder import ClipEncoder, identity_of_saved, save_model_dir

if TYPE_CHECKING:
    import torch

# Parameters a layer freeze counts as "below the first block": patch/token embeddings, stems.
_STEM = re.compile(
    r"(conv1|class_embedding|positional_embedding|ln_pre|token_embedding|"
    r"patch_embed|pos_embed|cls_token)"
)
_BLOCK = re.compile(r"resblocks\.(\d+)\.")
CACHE_LIMIT_BYTES = 4 << 30  # preprocessed pixels are kept in memory when they fit in this
TABLE_CELLS = 50_000_000  # labels x captions up to which `fits` is asked once, up front (50 MB)


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 10  # passes over the images
    max_steps: int | None = None  # stop after this many optimiser steps, whatever `epochs` says
    batch_size: int = 128  # image-caption pairs per step; CLIP's loss wants it large
    lr: float = 5e-4  # peak learning rate, reached after warmup, then cosine decay to min_lr
    min_lr: float = 0.0
    warmup_steps: int = 100  # linear warmup from 0
    weight_decay: float = 0.1  # AdamW; not applied to biases, norms, embeddings gains, scale
    grad_clip: float | None = 1.0  # max global gradient norm, or None
    freeze_image: bool = False  # keep the whole image tower fixed
    freeze_text: bool = False  # keep the whole text tower fixed
    freeze_layers: int = 0  # keep embeddings and the first N blocks of each trained tower fixed
    seed: int = 0  # batches, caption choice and dropout are deterministic given the seed on CPU
    save_every: int = 0  # also write a checkpoint to OUTPUT/epoch-K every K epochs (0: only final)
    half_weights: bool = False  # write float16 weights (half the size; loading casts back)
    # bfloat16 autocast and channels-last images on the CPU: 1.9x faster per step on this
    # AVX-512 BF16 machine (220 -> 117 ms for the shipped model's steps); weights stay float32
    cpu_bf16: bool = False


@dataclass(frozen=True)
class TrainStep:
    """What a progress callback receives after each optimiser step."""

    step: int  # 1-based
    total_steps: int
    epoch: int  # 1-based
    loss: float
    lr: float


@dataclass(frozen=True)
class FinetuneResult:
    output: Path  # the final model directory
    steps: int
    losses: tuple[float, ...]  # one per step
    seconds: float
    checkpoints: tuple[Path, ...]  # intermediate model directories, oldest first
    trainable_params: int
    total_params: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "steps": self.steps,
            "first_loss": self.losses[0] if self.losses else None,
            "final_loss": self.losses[-1] if self.losses else None,
            "seconds": round(self.seconds, 2),
            "checkpoints": [str(p) for p in self.checkpoints],
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
        }


def lr_at(step: int, total: int, config: FinetuneConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr` at `total` (step is 0-based)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, total - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    groups: torch.Tensor | None = None,
    fits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch whose i-th image and i-th caption belong together.

    `groups` (one id per pair) marks pairs with the same caption text: their images and captions
    are interchangeable, so the target spreads evenly over the group instead of punishing the
    model for ranking an identical caption first. `fits[i, j]` (images x captions, boolean)
    marks more true pairs: caption j describes image i too ("a red circle" fits every red
    circle of the batch). Each image's target spreads over the captions that fit it, each
    caption's over the images it fits; the i-th pairs always count.
    """
    import torch

    logits = logit_scale * image_features @ text_features.T
    if groups is None and fits is None:
        labels = torch.arange(len(logits), device=logits.device)
        return (
            torch.nn.functional.cross_entropy(logits, labels)
            + torch.nn.functional.cross_entropy(logits.T, labels)
        ) / 2
    positive = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    if groups is not None:
        positive |= groups[:, None] == groups[None, :]
    if fits is not None:
        if fits.shape != positive.shape or fits.dtype != torch.bool:
            raise ValueError(
                f"fits must be a boolean images x captions matrix of shape "
                f"{tuple(positive.shape)}, not {fits.dtype} {tuple(fits.shape)}"
            )
        positive |= fits.to(logits.device)
    weights = positive.float()
    return (
        torch.nn.functional.cross_entropy(logits, weights / weights.sum(dim=1, keepdim=True))
        + torch.nn.functional.cross_entropy(logits.T, (weights / weights.sum(dim=0)).T)
    ) / 2


def apply_freezing(model: Any, config: FinetuneConfig) -> None:
    """Set `requires_grad` from the freeze options; raise if nothing would be trained."""
    for name, param in model.named_parameters():
        in_image = name.startswith("visual.")
        in_text = not in_image and not name.startswith("logit_")
        frozen = (in_image and config.freeze_image) or (in_text and config.freeze_text)
        if config.freeze_layers and not frozen and (in_image or in_text):
            block = _BLOCK.search(name)
            frozen = (
                bool(_STEM.search(name))
                if block is None
                else (int(block.group(1)) < config.freeze_layers)
            )
        param.requires_grad_(not frozen)
    if config.freeze_layers and not any(_BLOCK.search(n) for n, _ in model.named_parameters()):
        raise TrainingError(
            f"--freeze-layers {config.freeze_layers} needs transformer blocks "
            "named 'resblocks.N', which this model does not have"
        )
    if config.freeze_image and config.freeze_text:
        raise TrainingError(
            "both towers are frozen, so there is nothing to train; "
            "drop --freeze-image or --freeze-text"
        )


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "logit_scale" in name or "embedding" in name or ".ln" in name
        (no_decay if exempt else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class _Pixels:
    """Preprocessed image tensors, decoded on first use and kept when they fit in memory."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable[[Any], Any], cache: bool):
        self.paths = paths
        self.preprocess = preprocess
        self.cache: dict[int, Any] | None = {} if cache else None

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        import torch
        from PIL import Image

        tensors = []
        for index in indices:
            tensor = self.cache.get(index) if self.cache is not None else None
            if tensor is None:
                with Image.open(self.paths[index]) as image:
                    tensor = self.preprocess(image.convert("RGB"))
                if self.cache is not None:
                    self.cache[index] = tensor
            tensors.append(tensor)
        return torch.stack(tensors)


def finetune(
    encoder: ClipEncoder,
    dataset: CaptionedSet,
    output: Path,
    model_cfg: dict[str, Any],
    config: FinetuneConfig | None = None,
    on_step: Callable[[TrainStep], None] | None = None,
    fits: Callable[[str, str], bool] | None = None,
) -> FinetuneResult:
    """Train `encoder.model` in place with CLIP's loss and save it to `output` (open_clip format).

    `model_cfg` is the architecture config written beside the weights (`model_config_of(spec)`,
    or the config a from-scratch model was built from). Each step pairs every image of the batch
    with one of its captions, drawn at random. With `fits(caption, label)`, which says whether a
    caption describes the images of a label (the data set must have labels), every caption of
    the batch counts as a true pair of every image it fits, not as a wrong one (`clip_loss`).
    """
    import torch

    config = config or FinetuneConfig()
    if encoder.precision != "fp32":
        raise TrainingError(
            f"fine-tuning needs fp32 weights, the model was loaded as "
            f"{encoder.precision}; load it with --precision fp32"
        )
    if len(dataset) < 2:
        raise TrainingError("a contrastive loss needs at least two images in the data set")
    batch_size = min(config.batch_size, len(dataset))
    steps_per_epoch = len(dataset) // batch_size  # drop the ragged last batch: the loss needs size
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps) if config.epochs else config.max_steps
    if total < 1:
        raise TrainingError("the schedule has no steps; raise --epochs or --steps")

    model = encoder.model
    device = encoder.device
    bf16 = config.cpu_bf16
    if bf16:
        if device != "cpu":
            raise TrainingError("cpu_bf16 trains on the CPU; the model is on " + device)
        model.to(memory_format=torch.channels_last)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    apply_freezing(model, config)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    tokens = [encoder.tokenizer(list(item.captions)) for item in dataset.items]
    caption_ids: dict[str, int] = {}
    for item in dataset.items:
        for caption in item.captions:
            caption_ids.setdefault(caption, len(caption_ids))
    pairs = _Pairs(dataset, caption_ids, fits) if fits is not None else None
    size = getattr(model.visual, "image_size", 224)
    pixel_bytes = 3 * 4 * (size[0] * size[1] if isinstance(size, tuple) else size * size)
    pixels = _Pixels(
        [item.path for item in dataset.items],
        encoder.preprocess,
        cache=len(dataset) * pixel_bytes <= CACHE_LIMIT_BYTES,
    )

    losses: list[float] = []
    checkpoints: list[Path] = []
    started = time.perf_counter()
    model.train()
    step = 0
    epoch = 0
    try:
        while step < total:
            epoch += 1
            order = list(range(len(dataset)))
            rng.shuffle(order)
            for start in range(0, steps_per_epoch * batch_size, batch_size):
                if step >= total:
                    break
                indices = order[start : start + batch_size]
                picks = [(i, rng.randrange(len(tokens[i]))) for i in indices]
                text = torch.stack([tokens[i][c] for i, c in picks])
                picked = torch.tensor([caption_ids[dataset.items[i].captions[c]] for i, c in picks])
                groups = picked.to(device)
                batch_fits = None if pairs is None else pairs.batch(indices, picked).to(device)
                lr = lr_at(step, total, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images = pixels.batch(indices).to(device)
                if bf16:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    image_features, text_features, scale = model(images, text.to(device))[:3]
                loss = clip_loss(
                    image_features.float(), text_features.float(), scale.float(), groups, batch_fits
                )
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss.item()} at step {step + 1}; "
                        "lower --lr or raise --warmup"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in model.parameters() if p.requires_grad], config.grad_clip
                    )
                optimizer.step()
                with torch.no_grad():  # as open_clip does: a temperature below 1/100 destabilises
                    model.logit_scale.clamp_(0, math.log(100))
                step += 1
                losses.append(float(loss.item()))
                if on_step is not None:
                    on_step(TrainStep(step, total, epoch, losses[-1], lr))
            if config.save_every and epoch % config.save_every == 0 and step < total:
                checkpoints.append(_save(model, model_cfg, output / f"epoch-{epoch}", config))
    finally:
        model.eval()
    _save(model, model_cfg, output, config)
    # the trained object now makes other vectors: it must not pass for the model it started as
    encoder.identity = identity_of_saved(output, encoder.identity)
    return FinetuneResult(
        output=output,
        steps=step,
        losses=tuple(losses),
        seconds=time.perf_counter() - started,
        checkpoints=tuple(checkpoints),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in model.parameters()),
    )


def same_label_fits(dataset: CaptionedSet) -> Callable[[str, str], bool]:
    """A `fits` for `finetune` that pairs each caption with every image of the label(s) of the
    images it describes: what evaluation with `match="label"` counts as a hit."""
    labels_of: dict[str, set[str]] = {}
    for item in dataset.items:
        for caption in item.captions:
            if item.label is not None:  # finetune refuses a set with unlabelled images
                labels_of.setdefault(caption, set()).add(item.label)
    return lambda caption, label: label in labels_of.get(caption, ())


class _Pairs:
    """`fits` asked for the batches of one data set: tabulated once over every label x caption
    when that table is small (5 s for the shipped recipe's 420 x 7,188), else asked per batch
    (a 128-pair batch asks 16,384 times), so a set with a label per image still fits in memory."""

    def __init__(
        self, dataset: CaptionedSet, caption_ids: dict[str, int], fits: Callable[[str, str], bool]
    ):
        import torch

        if not dataset.has_labels:
            raise TrainingError(
                "matching captions to images by label needs a label for every image; "
                f"{dataset.source} has images without one"
            )
        self.fits = fits
        self.item_labels = [str(item.label) for item in dataset.items]
        self.captions = sorted(caption_ids, key=caption_ids.__getitem__)
        labels = sorted(set(self.item_labels))
        self.table: torch.Tensor | None = None
        if len(labels) * len(self.captions) <= TABLE_CELLS:
            label_ids = {label: index for index, label in enumerate(labels)}
            self.item_rows = torch.tensor([label_ids[label] for label in self.item_labels])
            self.table = torch.tensor([[fits(c, label) for c in self.captions] for label in labels])

    def batch(self, indices: Sequence[int], picked: torch.Tensor) -> torch.Tensor:
        """[i, j]: whether the j-th picked caption fits the label of image `indices[i]`."""
        import torch

        if self.table is not None:
            rows = self.item_rows[list(indices)]
            return self.table[rows[:, None], picked[None, :]]
        captions = [self.captions[c] for c in picked.tolist()]
        return torch.tensor(
            [[self.fits(c, self.item_labels[i]) for c in captions] for i in indices]
        )


def _save(model: Any, model_cfg: dict[str, Any], path: Path, config: FinetuneConfig) -> Path:
    preprocess_cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    save_model_dir(model, model_cfg, path, preprocess_cfg)
    if config.half_weights:
        _halve_weights(path / "open_clip_model.safetensors")
    (path / "finetune_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return path


def _halve_weights(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(path))
