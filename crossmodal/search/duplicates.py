"""Near-duplicates: groups of indexed photos whose vectors are almost the same.

Exact: every pair is compared, a block of rows at a time (a matrix product), so it needs no ANN
index and misses nothing; 50,000 photos take about a minute on two cores (docs/search.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from crossmodal.errors import CrossmodalError
from crossmodal.store import ImageRow, ImageTable
from crossmodal.store.filters import Filters

DEFAULT_THRESHOLD = 0.95  # same scene, re-encoded, resized or lightly edited; bursts land above


@dataclass(frozen=True)
class DuplicateGroup:
    rows: tuple[ImageRow, ...]  # the one to keep first: most pixels, then largest file
    similarity: float  # the lowest similarity of the pairs that link the group

    @property
    def keep(self) -> ImageRow:
        return self.rows[0]


def find_duplicates(
    table: ImageTable,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    filters: Filters | None = None,
    block_rows: int = 512,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[DuplicateGroup]:
    """Groups of photos linked by pairs at least `threshold` similar (cosine), largest first.

    Linking is transitive: if A~B and B~C, A, B and C form one group. `on_progress` gets
    (rows compared, total rows).
    """
    if not -1.0 <= threshold <= 1.0:
        raise CrossmodalError(f"threshold {threshold} is not a cosine similarity (-1 to 1)")
    paths: list[str] = []
    blocks: list[np.ndarray] = []
    for batch_paths, vectors in table.vectors(filters):
        paths.extend(batch_paths)
        blocks.append(vectors)
    if len(paths) < 2:
        return []
    matrix = np.concatenate(blocks)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    parent = list(range(len(paths)))
    weakest: dict[int, float] = {}
    for start in range(0, len(paths), block_rows):
        # only pairs (i, j) with j > i: each pair once, never a photo with itself
        sims = matrix[start : start + block_rows] @ matrix[start:].T
        sims[np.tril_indices(sims.shape[0], m=sims.shape[1])] = -np.inf
        rows, cols = np.nonzero(sims >= threshold)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            a, b = _root(parent, start + i), _root(parent, start + j)
            link = float(sims[i, j])
            low = min(weakest.get(a, 1.0), weakest.get(b, 1.0), link)
            if a != b:
                parent[b] = a
            weakest[a] = low
        if on_progress:
            on_progress(min(start + block_rows, len(paths)), len(paths))
    members: dict[int, list[str]] = {}
    for index, path in enumerate(paths):
        members.setdefault(_root(parent, index), []).append(path)
    groups = [(root, group) for root, group in members.items() if len(group) > 1]
    records = table.records_for([p for _, group in groups for p in group])
    out = [
        DuplicateGroup(
            tuple(sorted((records[p][0] for p in group), key=_keep_order)),
            round(weakest[root], 6),
        )
        for root, group in groups
    ]
    return sorted(out, key=lambda g: (-len(g.rows), -g.similarity, g.keep.path))


def _root(parent: list[int], index: int) -> int:
    while parent[index] != index:
        parent[index] = parent[parent[index]]
        index = parent[index]
    return index


def _keep_order(row: ImageRow) -> tuple[int, int, str]:
    return (-row.width * row.height, -row.size, row.path)
