"""Storage: the one module that talks to LanceDB.

Tables remember which model made their vectors (in the Arrow schema metadata) and refuse to be
written or searched with another. Callers get and give typed rows, never LanceDB objects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from crossmodal.errors import ModelMismatchError, StoreError, TableNotFoundError
from crossmodal.models import ModelIdentity

IMAGES = "images"
TEXT_PREFIX = "text_"
SCHEMA_VERSION = 1
META_KEY = b"crossmodal"
_DELETE_CHUNK = 500


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


@dataclass(frozen=True)
class TextRow:
    text: str
    added_at: datetime


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


def sql_string(value: str) -> str:
    """Quote a value as an SQL string literal for a LanceDB `where` clause."""
    return "'" + value.replace("'", "''") + "'"


def _path_in(paths: Sequence[str]) -> str:
    return "path IN (" + ", ".join(sql_string(p) for p in paths) + ")"


def _vectors(matrix: np.ndarray, dim: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, dim)


class _Table:
    """Shared behaviour of image and text tables: identity, counting, deletion."""

    def __init__(self, table: Any, identity: ModelIdentity) -> None:
        self._table = table
        self.identity = identity
        self.name: str = table.name

    @property
    def dim(self) -> int:
        return self.identity.dim

    def count(self, where: str | None = None) -> int:
        return int(self._table.count_rows(where))

    def refresh(self) -> None:
        """See writes made by other processes since this table was opened."""
        self._table.checkout_latest()

    def _nearest(
        self, vector: np.ndarray, k: int, where: str | None, columns: list[str]
    ) -> pa.Table:
        query = self._table.search(np.asarray(vector, np.float32)).distance_type("cosine")
        if where:
            query = query.where(where, prefilter=True)
        return query.select([*columns, "_distance"]).limit(k).to_arrow()


class ImageTable(_Table):
    """The table of indexed images."""

    def stored_files(self) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, content_hash) for every row: what re-indexing compares."""
        data = self._table.to_arrow().select(["path", "size", "mtime_ns", "content_hash"])
        cols = [data.column(i).to_pylist() for i in range(4)]
        return {p: (s, m, h) for p, s, m, h in zip(*cols, strict=True)}

    def records_for(self, paths: Sequence[str]) -> dict[str, tuple[ImageRow, np.ndarray]]:
        """Rows and vectors of the given paths (those that are stored)."""
        out: dict[str, tuple[ImageRow, np.ndarray]] = {}
        for start in range(0, len(paths), _DELETE_CHUNK):
            chunk = paths[start : start + _DELETE_CHUNK]
            data = self._table.search().where(_path_in(chunk)).limit(len(chunk)).to_arrow()
            rows = _image_rows(data)
            vectors = _matrix(data.column("vector"), self.dim)
            for row, vector in zip(rows, vectors, strict=True):
                out[row.path] = (row, vector)
        return out

    def upsert(self, rows: Sequence[ImageRow], vectors: np.ndarray) -> None:
        """Insert rows, or replace those whose path is already stored, in one atomic commit."""
        if not rows:
            return
        columns: dict[str, Any] = {
            f.name: [getattr(r, f.name) for r in rows] for f in fields(ImageRow)
        }
        columns["vector"] = _vectors(vectors, self.dim)
        data = pa.table(columns, schema=self._table.schema)
        (
            self._table.merge_insert("path")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(data)
        )

    def delete_paths(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        for start in range(0, len(paths), _DELETE_CHUNK):
            self._table.delete(_path_in(paths[start : start + _DELETE_CHUNK]))

    def get(self, path: str) -> tuple[ImageRow, np.ndarray] | None:
        data = self._table.search().where(f"path = {sql_string(path)}").limit(1).to_arrow()
        if data.num_rows == 0:
            return None
        return _image_rows(data)[0], _matrix(data.column("vector"), self.dim)[0]

    def nearest(
        self, vector: np.ndarray, k: int, where: str | None = None
    ) -> list[tuple[ImageRow, float]]:
        """The k rows closest to `vector`, with cosine similarity, best first."""
        columns = [f.name for f in fields(ImageRow)]
        data = self._nearest(vector, k, where, columns)
        similarities = [1.0 - d for d in data.column("_distance").to_pylist()]
        return list(zip(_image_rows(data), similarities, strict=True))

    def rows(self, where: str | None = None) -> list[ImageRow]:
        query = self._table.search().select([f.name for f in fields(ImageRow)])
        if where:
            query = query.where(where)
        return _image_rows(query.limit(None).to_arrow())


class TextTable(_Table):
    """A table of labels or captions, searched from images."""

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        if not texts:
            return
        now = datetime.now()
        data = pa.table(
            {
                "text": list(texts),
                "added_at": [now] * len(texts),
                "vector": _vectors(vectors, self.dim),
            },
            schema=self._table.schema,
        )
        (
            self._table.merge_insert("text")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(data)
        )

    def all(self) -> tuple[list[str], np.ndarray]:
        """Every text with its vector, in insertion order."""
        data = self._table.to_arrow()
        return data.column("text").to_pylist(), _matrix(data.column("vector"), self.dim)

    def remove(self, texts: Iterable[str]) -> None:
        texts = list(texts)
        if texts:
            self._table.delete("text IN (" + ", ".join(sql_string(t) for t in texts) + ")")

    def nearest(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        data = self._nearest(vector, k, None, ["text"])
        return [
            (t, 1.0 - d)
            for t, d in zip(
                data.column("text").to_pylist(), data.column("_distance").to_pylist(), strict=True
            )
        ]


def _matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, np.float32).reshape(-1, dim)


def _image_rows(data: pa.Table) -> list[ImageRow]:
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


class Store:
    """A crossmodal database: a LanceDB directory with one image table and any text tables."""

    def __init__(self, db_dir: Path, connection: Any) -> None:
        self.db_dir = db_dir
        self._db = connection

    @classmethod
    def open(cls, db_dir: str | os.PathLike[str], *, create: bool = False) -> Store:
        import lancedb

        path = Path(db_dir).expanduser().resolve()
        if not path.exists() and not create:
            raise StoreError(
                f"no database at {path}.\nFix: build one with "
                f"`crossmodal index PHOTOS_DIR --db {db_dir}`"
            )
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} is a file, not a database folder; choose another --db")
        try:
            path.mkdir(parents=True, exist_ok=True)
            # interval 0: every read sees the latest commit, also one made by another process
            return cls(path, lancedb.connect(str(path), read_consistency_interval=timedelta(0)))
        except Exception as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc

    def table_names(self) -> list[str]:
        return sorted(self._db.list_tables().tables)

    def text_table_names(self) -> list[str]:
        return [n[len(TEXT_PREFIX) :] for n in self.table_names() if n.startswith(TEXT_PREFIX)]

    def info(self, table: str) -> TableInfo:
        lance_table = self._open(table)
        meta = _read_meta(lance_table, table, self.db_dir)
        return TableInfo(
            table,
            meta["kind"],
            int(lance_table.count_rows()),
            ModelIdentity.from_dict(meta["model"]),
            int(meta["schema_version"]),
        )

    def images(self, identity: ModelIdentity, *, create: bool = False) -> ImageTable:
        """The image table, checked against `identity`; created when asked and missing."""
        if create and IMAGES not in self.table_names():
            return ImageTable(
                self._db.create_table(
                    IMAGES, schema=image_schema(identity.dim, identity), exist_ok=True
                ),
                identity,
            )
        table = self._open(IMAGES)
        self._check(table, IMAGES, identity)
        return ImageTable(table, identity)

    def texts(self, name: str, identity: ModelIdentity, *, create: bool = False) -> TextTable:
        full = TEXT_PREFIX + name
        if create and full not in self.table_names():
            return TextTable(
                self._db.create_table(
                    full, schema=text_schema(identity.dim, identity), exist_ok=True
                ),
                identity,
            )
        table = self._open(full)
        self._check(table, full, identity)
        return TextTable(table, identity)

    def drop(self, table: str) -> None:
        if table in self.table_names():
            self._db.drop_table(table)

    def _open(self, name: str) -> Any:
        if name not in self.table_names():
            if name == IMAGES:
                fix = f"index a folder first: `crossmodal index PHOTOS_DIR --db {self.db_dir}`"
            else:
                fix = (
                    f"load texts first: `crossmodal labels add FILE --db {self.db_dir} "
                    f"--table {name[len(TEXT_PREFIX) :]}`"
                )
            raise TableNotFoundError(name, str(self.db_dir), fix)
        try:
            return self._db.open_table(name)
        except Exception as exc:
            raise StoreError(f"cannot open table {name!r} in {self.db_dir}: {exc}") from exc

    def _check(self, table: Any, name: str, identity: ModelIdentity) -> None:
        stored = ModelIdentity.from_dict(_read_meta(table, name, self.db_dir)["model"])
        if not stored.compatible_with(identity):
            raise ModelMismatchError(
                name,
                stored.spec,
                identity.spec,
                fix=f"search with the table's model (--model {stored.spec}), or rebuild the "
                f"table with yours: `crossmodal index PHOTOS_DIR --db {self.db_dir} "
                f"--model {identity.spec} --rebuild`",
            )


def _read_meta(table: Any, name: str, db_dir: Path) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise StoreError(
            f"table {name!r} in {db_dir} was not written by crossmodal "
            "(no model record); use another --db"
        )
    meta: dict[str, Any] = json.loads(raw)
    version = int(meta.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"table {name!r} in {db_dir} has schema version {version}, newer than "
            f"this crossmodal understands ({SCHEMA_VERSION}).\n"
            "Fix: upgrade crossmodal (`pip install -U crossmodal`)"
        )
    return meta


def row_dict(row: ImageRow) -> dict[str, Any]:
    """An ImageRow as plain JSON-ready values."""
    data = asdict(row)
    for key in ("captured_at", "taken_at", "indexed_at"):
        if data[key] is not None:
            data[key] = data[key].isoformat(sep=" ", timespec="seconds")
    return data
