"""Evaluation: retrieval recall both ways, zero-shot accuracy, and what smaller vectors cost.

Takes any `Encoder` and an image set from `crossmodal.media.captions`; returns frozen reports.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.media.captions import CaptionedSet, ClassFolderSet
from crossmodal.model.specs import Encoder

DEFAULT_KS = (1, 5, 10)
DEFAULT_TEMPLATES = ("a photo of a {}.",)
MATCH_MODES = ("image", "label")
_CHUNK = 256  # images decoded at once; bounds memory on large sets
_QUERY_CHUNK = 1024  # score rows ranked at once

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class RecallMetrics:
    """Recall@k and rank of the first relevant result, over one direction's queries."""

    queries: int
    recall: tuple[tuple[int, float], ...]  # (k, fraction of queries with a hit in the top k)
    mean_rank: float  # 1-based rank of the best-ranked relevant item, averaged
    median_rank: float
    chance_r1: float  # Recall@1 a random ranking would get on these queries

    def at(self, k: int) -> float:
        return dict(self.recall)[k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            **{f"R@{k}": round(v, 6) for k, v in self.recall},
            "mean_rank": round(self.mean_rank, 4),
            "median_rank": self.median_rank,
            "chance_R@1": round(self.chance_r1, 6),
        }


@dataclass(frozen=True)
class RetrievalReport:
    model: str
    source: str  # the captions file
    match: str  # "image": a hit is the caption's own image; "label": any image with its label
    images: int
    captions: int
    text_to_image: RecallMetrics
    image_to_text: RecallMetrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "match": self.match,
            "images": self.images,
            "captions": self.captions,
            "text_to_image": self.text_to_image.to_dict(),
            "image_to_text": self.image_to_text.to_dict(),
        }


@dataclass(frozen=True)
class ZeroShotReport:
    model: str
    source: str
    classes: tuple[str, ...]
    templates: tuple[str, ...]
    images: int
    top1: float
    top5: float  # equals 1.0 when there are five classes or fewer
    chance_top1: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "classes": list(self.classes),
            "templates": list(self.templates),
            "images": self.images,
            "top1": round(self.top1, 6),
            "top5": round(self.top5, 6),
            "chance_top1": round(self.chance_top1, 6),
        }


@dataclass(frozen=True)
class EncodedSet:
    """A captioned set's vectors and the keys that say which caption belongs to which image."""

    image_vectors: np.ndarray  # (images, dim), unit rows
    text_vectors: np.ndarray  # (captions, dim), unit rows
    image_keys: tuple[Hashable, ...]  # a caption is relevant to an image when their keys match
    text_keys: tuple[Hashable, ...]


@dataclass(frozen=True)
class CompressionRow:
    dim: int
    precision: str  # fp32 or fp16: how the stored and query vectors are held
    bytes_per_vector: int
    text_to_image: RecallMetrics
    image_to_text: RecallMetrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "precision": self.precision,
            "bytes_per_vector": self.bytes_per_vector,
            "text_to_image": self.text_to_image.to_dict(),
            "image_to_text": self.image_to_text.to_dict(),
        }


def first_hit_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based rank of each row's best relevant column; ties count against the query.

    Counting ties against the query means a constant encoder scores no better than chance order.
    """
    best = np.where(relevant, scores, -np.inf).max(axis=1, keepdims=True)
    return 1 + ((scores >= best) & ~relevant).sum(axis=1)


def recall_metrics(
    query_vectors: np.ndarray,
    item_vectors: np.ndarray,
    query_keys: Sequence[Hashable],
    item_keys: Sequence[Hashable],
    ks: Sequence[int] = DEFAULT_KS,
) -> RecallMetrics:
    """Rank items for every query by dot product; an item is relevant when its key matches."""
    codes: dict[Hashable, int] = {}
    item_codes = np.array([codes.setdefault(k, len(codes)) for k in item_keys])
    query_codes = np.array([codes.get(k, -1) for k in query_keys])
    if (query_codes < 0).any():
        raise ValueError("some queries have no relevant item")
    ranks = np.concatenate(
        [
            first_hit_ranks(
                query_vectors[s : s + _QUERY_CHUNK] @ item_vectors.T,
                query_codes[s : s + _QUERY_CHUNK, None] == item_codes[None, :],
            )
            for s in range(0, len(query_vectors), _QUERY_CHUNK)
        ]
    )
    relevant_counts = np.bincount(item_codes, minlength=len(codes))[query_codes]
    return RecallMetrics(
        queries=len(ranks),
        recall=tuple((k, float((ranks <= k).mean())) for k in ks),
        mean_rank=float(ranks.mean()),
        median_rank=float(np.median(ranks)),
        chance_r1=float((relevant_counts / len(item_codes)).mean()),
    )


def encode_captioned_set(
    encoder: Encoder,
    dataset: CaptionedSet,
    match: str = "image",
    on_progress: Progress | None = None,
) -> EncodedSet:
    """Encode every image and caption; `match` picks image identity or label as the hit key."""
    if match not in MATCH_MODES:
        raise ValueError(f"unknown match {match!r}; choose one of {', '.join(MATCH_MODES)}")
    if match == "label" and not dataset.has_labels:
        raise ValueError(f"{dataset.source} has images without a label; use match='image'")
    image_keys = tuple(
        item.label if match == "label" else i for i, item in enumerate(dataset.items)
    )
    image_vectors = encode_image_files(encoder, [item.path for item in dataset.items], on_progress)
    texts = [caption for item in dataset.items for caption in item.captions]
    text_keys = tuple(
        key for key, item in zip(image_keys, dataset.items, strict=True) for _ in item.captions
    )
    return EncodedSet(image_vectors, encoder.encode_texts(texts), image_keys, text_keys)


def encode_image_files(
    encoder: Encoder, paths: Sequence[Path], on_progress: Progress | None = None
) -> np.ndarray:
    from PIL import Image

    out = [np.empty((0, encoder.dim), np.float32)]
    for start in range(0, len(paths), _CHUNK):
        images = []
        for path in paths[start : start + _CHUNK]:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        out.append(encoder.encode_images(images))
        if on_progress is not None:
            on_progress(min(start + _CHUNK, len(paths)), len(paths))
    return np.concatenate(out)


def retrieval_report(
    encoded: EncodedSet,
    *,
    model: str = "",
    source: str = "",
    match: str = "image",
    ks: Sequence[int] = DEFAULT_KS,
) -> RetrievalReport:
    return RetrievalReport(
        model=model,
        source=source,
        match=match,
        images=len(encoded.image_vectors),
        captions=len(encoded.text_vectors),
        text_to_image=recall_metrics(
            encoded.text_vectors, encoded.image_vectors, encoded.text_keys, encoded.image_keys, ks
        ),
        image_to_text=recall_metrics(
            encoded.image_vectors, encoded.text_vectors, encoded.image_keys, encoded.text_keys, ks
        ),
    )


def evaluate_retrieval(
    encoder: Encoder,
    dataset: CaptionedSet,
    *,
    match: str = "image",
    ks: Sequence[int] = DEFAULT_KS,
    on_progress: Progress | None = None,
) -> RetrievalReport:
    """Text -> image and image -> text Recall@k and ranks on a captioned image set.

    With match="image" (the Flickr30k/COCO protocol) a caption's only relevant image is its own,
    and an image query hits when any of its captions ranks high. With match="label" every image
    and caption sharing the label (e.g. an attribute combination) is relevant.
    """
    encoded = encode_captioned_set(encoder, dataset, match, on_progress)
    return retrieval_report(
        encoded, model=encoder.identity.spec, source=str(dataset.source), match=match, ks=ks
    )


def evaluate_zero_shot(
    encoder: Encoder,
    dataset: ClassFolderSet,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    on_progress: Progress | None = None,
) -> ZeroShotReport:
    """Classify each image as the class whose prompts' mean text vector is nearest."""
    if not templates or not all("{}" in t for t in templates):
        raise ValueError("each template needs a {} where the class name goes")
    prompts = [t.format(name) for name in dataset.classes for t in templates]
    text = encoder.encode_texts(prompts).reshape(len(dataset.classes), len(templates), -1).mean(1)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    scores = encode_image_files(encoder, dataset.paths, on_progress) @ text.T
    targets = np.array(dataset.targets)
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    ranks = (scores >= target_scores).sum(axis=1)  # ties count against the image, as in retrieval
    return ZeroShotReport(
        model=encoder.identity.spec,
        source=str(dataset.root),
        classes=dataset.classes,
        templates=tuple(templates),
        images=len(targets),
        top1=float((ranks <= 1).mean()),
        top5=float((ranks <= 5).mean()),
        chance_top1=1.0 / len(dataset.classes),
    )


def default_dims(dim: int, smallest: int = 8) -> tuple[int, ...]:
    """The full dimension, then halvings down to `smallest`: 512, 256, ..., 8."""
    dims = [dim]
    while dims[-1] // 2 >= smallest:
        dims.append(dims[-1] // 2)
    return tuple(dims)


def fit_projection(collection: np.ndarray, dim: int) -> np.ndarray:
    """The top `dim` principal directions of the collection's vectors, as a (D, dim) matrix.

    Uncentred (a truncated SVD): the projection then keeps query-item dot products, which
    centring on the image mean would shift for text queries that live elsewhere in the space.
    """
    _, _, vt = np.linalg.svd(collection.astype(np.float64), full_matrices=False)
    return vt[: min(dim, len(vt))].T


def _reduce(vectors: np.ndarray, projection: np.ndarray | None, precision: str) -> np.ndarray:
    out = vectors.astype(np.float64) if projection is None else vectors @ projection
    out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    if precision == "fp16":
        return out.astype(np.float16).astype(np.float32)
    return out.astype(np.float32)


def compression_study(
    encoded: EncodedSet,
    dims: Sequence[int] | None = None,
    precisions: Sequence[str] = ("fp32", "fp16"),
    ks: Sequence[int] = DEFAULT_KS,
) -> tuple[CompressionRow, ...]:
    """Recall when the vectors are stored at reduced dimension (PCA) and precision (float16).

    The projection is fitted on the image vectors (the collection) and applied to both sides;
    vectors are re-normalised after projection, then rounded to the precision.
    """
    full = encoded.image_vectors.shape[1]
    rows = []
    for dim in dims or default_dims(full):
        projection = None if dim >= full else fit_projection(encoded.image_vectors, dim)
        kept = full if projection is None else projection.shape[1]
        for precision in precisions:
            if precision not in ("fp32", "fp16"):
                raise ValueError(f"unknown precision {precision!r}; choose fp32 or fp16")
            images = _reduce(encoded.image_vectors, projection, precision)
            texts = _reduce(encoded.text_vectors, projection, precision)
            rows.append(
                CompressionRow(
                    dim=kept,
                    precision=precision,
                    bytes_per_vector=kept * (2 if precision == "fp16" else 4),
                    text_to_image=recall_metrics(
                        texts, images, encoded.text_keys, encoded.image_keys, ks
                    ),
                    image_to_text=recall_metrics(
                        images, texts, encoded.image_keys, encoded.text_keys, ks
                    ),
                )
            )
    return tuple(rows)
