"""Zero-shot classification of a whole index: stored vectors x a label table -> a label column.

No image is decoded or encoded again: the photos' stored vectors are scored against the labels'
vectors, so labelling 100,000 photos takes seconds. The result is a column searches filter on.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from crossmodal.errors import CrossmodalError
from crossmodal.model.specs import Encoder
from crossmodal.search.labels import DEFAULT_TABLE
from crossmodal.store import Store
from crossmodal.store.filters import Filters


@dataclass(frozen=True)
class LabelReport:
    label_set: str  # the text table and a digest of its labels, e.g. "labels:1f2e3d4c"
    labelled: int  # photos given a label in this run
    already: int  # photos that already carried a label from this same label set
    counts: tuple[tuple[str, int], ...]  # photos per label in this run, most common first
    seconds: float


def label_set_id(table: str, labels: list[str]) -> str:
    """Names a label table's exact contents: adding or removing a label changes it, so every
    photo is labelled again on the next run."""
    digest = hashlib.blake2b("\n".join(sorted(labels)).encode(), digest_size=4).hexdigest()
    return f"{table}:{digest}"


def label_index(
    store: Store,
    encoder: Encoder,
    table: str = DEFAULT_TABLE,
    *,
    filters: Filters | None = None,
    relabel: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> LabelReport:
    """Give every indexed photo (matching `filters`) its most likely label from a text table.

    Photos already labelled from the same label set are skipped unless `relabel`; a photo
    re-indexed since it was labelled has lost its label and is labelled again.
    `on_progress` gets the number of photos labelled so far.
    """
    started = time.perf_counter()
    labels, label_vectors = store.texts(table, encoder.identity).all()
    if not labels:
        raise CrossmodalError(f"text table {table!r} holds no labels; add some first")
    images = store.images(encoder.identity)
    label_set = label_set_id(table, labels)
    if relabel:
        already, todo = 0, images.vectors(filters)
    else:
        already = images.count_labelled(label_set, filters)
        todo = images.unlabelled_vectors(label_set, filters)
    counts: Counter[str] = Counter()
    done = 0
    for paths, vectors in todo:
        logits = encoder.logit_scale * (vectors @ label_vectors.T).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        best = probabilities.argmax(axis=1)
        chosen = [labels[i] for i in best]
        images.set_labels(paths, chosen, probabilities[np.arange(len(best)), best], label_set)
        counts.update(chosen)
        done += len(paths)
        if on_progress:
            on_progress(done)
    images.maintain_index()  # the label column's scalar and keyword indexes
    return LabelReport(
        label_set, done, already, tuple(counts.most_common()), time.perf_counter() - started
    )
