"""Records: the rows, Arrow schemas and index settings of crossmodal's tables. Pure data.

`crossmodal.store` writes and reads these through LanceDB; nothing here imports it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from crossmodal.model.specs import ModelIdentity

SCHEMA_VERSION = 1
META_KEY = b"crossmodal"

# Written by `classify --all`, added to a table the first time; older tables simply lack them.
LABEL_FIELDS = (
    pa.field("label", pa.string()),  # the most likely label of the photo
    pa.field("label_probability", pa.float32()),  # its zero-shot probability
    pa.field("label_set", pa.string()),  # the label table and its digest, e.g. "labels:1f2e3d4c"
)


@dataclass(frozen=True)
class IndexPolicy:
    """When a table gets an ANN index, and how searches use it.

    Below `min_rows` a search is an exact scan, fast enough at that size. Above, an IVF index
    with cosine distance picks candidates (IVF_RQ: RaBitQ codes of `num_bits` bits a
    dimension), and `refine_factor` times `k` of them are re-scored on their full vectors, so
    scores are exact cosine similarities and the ranking is exact among the candidates.
    """

    min_rows: int = 10_000
    # IVF_RQ with 4-bit codes searched 1.4-1.7x faster than IVF_SQ (8-bit codes) at the same
    # recall at 1M rows; 1-bit codes lost the text queries' neighbours (BENCHMARKS.md).
    index_type: str = "IVF_RQ"  # or IVF_SQ, IVF_PQ
    num_bits: int = 4  # IVF_RQ's bits per dimension
    partition_rows: int = 4_096  # rows per IVF partition when the index is trained
    nprobes: int = 16  # partitions searched per query (more are searched if a filter needs it)
    refine_factor: int = 5
    # A filter keeping at most `exact_filter_rows` rows is searched exactly over those rows
    # (5 ms for 1,000 of 1M rows here, recall 1.0, where 16 probes found 0.65 of the top 10);
    # a wider one probes enough partitions to hold `filter_candidates` of its rows on average.
    exact_filter_rows: int = 5_000
    filter_candidates: int = 600
    retrain_growth: float = 2.0  # retrain once the table has this many times the trained rows
    # Folding new rows into the indexes rewrites the keyword index whole (3.6 s of the 4.5 s at
    # 1M rows, benchmarks/big_table.py), so past `fold_below_rows` it waits until the rows not
    # yet indexed are `fold_fraction` of the table; searches cover them exactly meanwhile.
    fold_below_rows: int = 100_000
    fold_fraction: float = 0.005


@dataclass(frozen=True)
class FilterReach:
    """What a filtered search needs to know once per table version and filter: the rows the
    filter keeps, and the partitions of the table's ANN index (None: no index, exact search)."""

    kept: int | None  # None when not counted: without an ANN index it does not matter
    partitions: int | None


@dataclass(frozen=True)
class IndexState:
    rows: int
    vector_index: str | None  # the ANN index type, e.g. "IVF_RQ"; None while searches are exact
    unindexed_rows: int  # rows the ANN index does not cover yet (searched exactly meanwhile)
    partitions: int | None
    keyword_columns: tuple[str, ...]  # columns with a full-text index
    scalar_columns: tuple[str, ...]  # columns with a scalar index


@dataclass(frozen=True)
class ImageRow:
    """One indexed image, without its vector."""

    path: str  # absolute path of the file
    folder: str  # the folder that holds it
    name: str  # file name
    suffix: str  # lower-case extension with the dot, e.g. ".jpg"
    size: int  # bytes
    mtime_ns: int  # file modification time when indexed
    content_hash: str  # blake2b of the bytes
    width: int  # pixels, upright
    height: int
    format: str  # JPEG, PNG, ...
    captured_at: datetime | None  # EXIF capture time, when present
    taken_at: datetime  # capture time, else the file's modification time: what date filters use
    indexed_at: datetime


def image_schema(dim: int, identity: ModelIdentity) -> pa.Schema:
    return pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("folder", pa.string(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("suffix", pa.string(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("mtime_ns", pa.int64(), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("format", pa.string(), nullable=False),
            pa.field("captured_at", pa.timestamp("us")),
            pa.field("taken_at", pa.timestamp("us"), nullable=False),
            pa.field("indexed_at", pa.timestamp("us"), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ],
        metadata={META_KEY: _meta("images", identity)},
    )


def text_schema(dim: int, identity: ModelIdentity) -> pa.Schema:
    return pa.schema(
        [
            pa.field("text", pa.string(), nullable=False),
            pa.field("added_at", pa.timestamp("us"), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ],
        metadata={META_KEY: _meta("texts", identity)},
    )


def _meta(kind: str, identity: ModelIdentity) -> bytes:
    data = {"schema_version": SCHEMA_VERSION, "kind": kind, "model": identity.to_dict()}
    return json.dumps(data, sort_keys=True).encode()


def arrow_vectors(matrix: np.ndarray, dim: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, dim)


def numpy_vectors(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, np.float32).reshape(-1, dim)


def image_rows(data: pa.Table) -> list[ImageRow]:
    names = [f.name for f in fields(ImageRow)]
    columns = [data.column(n).to_pylist() for n in names]
    return [ImageRow(*values) for values in zip(*columns, strict=True)]


@dataclass(frozen=True)
class TableInfo:
    name: str
    kind: str  # "images" or "texts"
    rows: int
    model: ModelIdentity
    schema_version: int


def row_dict(row: ImageRow) -> dict[str, Any]:
    """An ImageRow as plain JSON-ready values."""
    data = asdict(row)
    for key in ("captured_at", "taken_at", "indexed_at"):
        if data[key] is not None:
            data[key] = data[key].isoformat(sep=" ", timespec="seconds")
    return data
