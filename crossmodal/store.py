"""Storage: the one module that talks to LanceDB.

Tables remember which model made their vectors (in the Arrow schema metadata) and refuse to be
written or searched with another. Callers get and give typed rows, never LanceDB objects.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from crossmodal.errors import CrossmodalError, ModelMismatchError, StoreError, TableNotFoundError
from crossmodal.models import ModelIdentity
from crossmodal.records import (  # noqa: F401  (callers import rows from the store)
    LABEL_FIELDS,
    META_KEY,
    SCHEMA_VERSION,
    ImageRow,
    IndexPolicy,
    IndexState,
    TableInfo,
    TextRow,
    arrow_vectors,
    image_rows,
    image_schema,
    numpy_vectors,
    row_dict,
    sql_string,
    text_schema,
)

IMAGES = "images"
TEXT_PREFIX = "text_"
_DELETE_CHUNK = 500
# Lance file format of new tables. The default (2.2) encodes low-cardinality columns (suffix,
# format, width, height) so that reading one row decodes a whole page: at 1M rows, fetching
# the 13 columns of 10 hits took 18-25 ms in 2.2 and 4 ms in 2.1 (benchmarks/search_latency.py).
FILE_FORMAT = "2.1"
FTS_COLUMNS = ("name", "folder", "label")  # what keyword (hybrid) search reads
SCALAR_INDEXES = {"path": "btree", "taken_at": "btree", "format": "bitmap", "label": "bitmap"}


def _path_in(paths: Sequence[str]) -> str:
    return "path IN (" + ", ".join(sql_string(p) for p in paths) + ")"


class _Table:
    """Shared behaviour of image and text tables: identity, counting, nearest neighbours, and
    the upkeep of their indexes."""

    def __init__(
        self, table: Any, identity: ModelIdentity, policy: IndexPolicy | None = None
    ) -> None:
        self._lance = table
        self.identity = identity
        self.name: str = table.name
        self.policy = policy or IndexPolicy()

    @property
    def _table(self) -> Any:
        """The LanceDB table at its latest commit, which may come from another process (an
        index run, or a compaction that removed the files of older versions). Connections do
        not refresh on their own: that checks on each of a search's internal reads (~2 ms per
        search at 1M rows); one checkout per use costs ~0.3 ms."""
        self._lance.checkout_latest()
        return self._lance

    @property
    def dim(self) -> int:
        return self.identity.dim

    def count(self, where: str | None = None) -> int:
        return int(self._table.count_rows(where))

    def refresh(self) -> None:
        """See writes made by other processes since this table was last used."""
        self._lance.checkout_latest()

    def _nearest(
        self,
        vector: np.ndarray,
        k: int,
        where: str | None,
        columns: list[str],
        offset: int = 0,
    ) -> pa.Table:
        policy = self.policy
        query = (
            self._table.search(np.asarray(vector, np.float32))
            .distance_type("cosine")
            # ignored by an exact scan; with an index, re-scores candidates on full vectors
            .nprobes(policy.nprobes)
            .refine_factor(policy.refine_factor)
        )
        if where:
            # a narrow filter may need more partitions to fill k (costs time: filters only)
            query = query.where(where, prefilter=True).maximum_nprobes(0)
        query = query.select([*columns, "_distance"]).limit(k + offset)
        return _run(query, where).slice(offset)

    def index_state(self) -> IndexState:
        rows = self.count()
        vector_index, unindexed, partitions = None, 0, None
        keyword: list[str] = []
        scalar: list[str] = []
        for config in self._table.list_indices():
            column = config.columns[0]
            if config.index_type == "FTS":
                keyword.append(column)
            elif column == "vector":
                stats = self._table.index_stats(config.name)
                vector_index = stats.index_type if stats else config.index_type
                unindexed = int(stats.num_unindexed_rows) if stats else 0
                partitions = _partitions(config.name)
            else:
                scalar.append(column)
        return IndexState(
            rows, vector_index, unindexed, partitions, tuple(sorted(keyword)), tuple(sorted(scalar))
        )

    def build_index(self, *, keywords_only: bool = False) -> IndexState:
        """Build (or rebuild) the ANN index, the scalar indexes and the keyword indexes now."""
        from lancedb.index import FTS

        rows = self.count()
        if not keywords_only:
            if rows < 256:
                raise CrossmodalError(
                    f"table {self.name!r} has {rows} rows; an ANN index needs at least 256 "
                    "(smaller tables are searched exactly, which is already fast)"
                )
            self._build_vector_index(rows)
            for column, kind in SCALAR_INDEXES.items():
                if column in self._table.schema.names:
                    self._table.create_index(column, config=_scalar_config(kind), replace=True)
        for column in FTS_COLUMNS:
            if column in self._table.schema.names:
                self._table.create_index(column, config=FTS(), replace=True)
        return self.index_state()

    def maintain_index(self) -> IndexState:
        """What to call after writes: builds the ANN index once the table is large enough,
        folds new rows into existing indexes, retrains one the table has outgrown, and
        compacts the files. Cheap when nothing changed."""
        state = self.index_state()
        trained = (state.partitions or 0) * self.policy.partition_rows
        if (state.vector_index is None and state.rows >= self.policy.min_rows) or (
            state.partitions and state.rows > self.policy.retrain_growth * trained
        ):
            self._compact()  # first: an index built on compacted files is faster to search
            return self.build_index()
        names = self._table.schema.names
        if set(c for c in FTS_COLUMNS if c in names) - set(state.keyword_columns):
            self.build_index(keywords_only=True)
        if state.vector_index is not None:
            for column, kind in SCALAR_INDEXES.items():  # e.g. `label`, added after the build
                if column in names and column not in state.scalar_columns:
                    self._table.create_index(column, config=_scalar_config(kind))
        self._compact()
        return self.index_state()

    def _compact(self) -> None:
        """Merge new rows into every index, compact small files, and delete the files of
        versions older than ten minutes (a compaction would otherwise double the disk use for
        LanceDB's default week). Every read checks out the latest version, so only a query
        running for ten minutes could still need an old one."""
        self._table.optimize(cleanup_older_than=timedelta(minutes=10))

    def _build_vector_index(self, rows: int) -> None:
        from lancedb import index

        configs = {"IVF_SQ": index.IvfSq, "IVF_RQ": index.IvfRq, "IVF_PQ": index.IvfPq}
        if self.policy.index_type not in configs:
            raise CrossmodalError(
                f"unknown index type {self.policy.index_type!r}; choose {', '.join(configs)}"
            )
        partitions = max(1, rows // self.policy.partition_rows)
        for config in self._table.list_indices():
            if config.columns == ["vector"] and config.name != f"vector_p{partitions}":
                # until the new one is built, searches scan exactly: slower, never wrong
                self._table.drop_index(config.name)
        self._table.create_index(
            "vector",
            config=configs[self.policy.index_type](
                distance_type="cosine", num_partitions=partitions
            ),
            replace=True,
            # LanceDB does not report the partition count; the name keeps it for retraining
            name=f"vector_p{partitions}",
        )


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
            rows = image_rows(data)
            vectors = numpy_vectors(data.column("vector"), self.dim)
            for row, vector in zip(rows, vectors, strict=True):
                out[row.path] = (row, vector)
        return out

    def upsert(self, rows: Sequence[ImageRow], vectors: np.ndarray) -> None:
        """Insert rows, or replace those whose path is already stored, in one atomic commit."""
        if not rows:
            return
        (
            self._table.merge_insert("path")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(self._arrow(rows, vectors))
        )

    def append(self, rows: Sequence[ImageRow], vectors: np.ndarray) -> None:
        """Add rows whose paths the caller knows are not stored yet: no lookup, much faster
        than `upsert` for a first bulk load. One atomic commit."""
        if rows:
            self._table.add(self._arrow(rows, vectors))

    def _arrow(self, rows: Sequence[ImageRow], vectors: np.ndarray) -> pa.Table:
        columns: dict[str, Any] = {
            f.name: [getattr(r, f.name) for r in rows] for f in fields(ImageRow)
        }
        columns["vector"] = arrow_vectors(vectors, self.dim)
        schema = self._table.schema
        for name in schema.names:
            # labels describe the old content: a changed row is labelled again by classify
            columns.setdefault(name, pa.nulls(len(rows), schema.field(name).type))
        return pa.table(columns, schema=schema)

    def delete_paths(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        for start in range(0, len(paths), _DELETE_CHUNK):
            self._table.delete(_path_in(paths[start : start + _DELETE_CHUNK]))

    def get(self, path: str) -> tuple[ImageRow, np.ndarray] | None:
        data = self._table.search().where(f"path = {sql_string(path)}").limit(1).to_arrow()
        if data.num_rows == 0:
            return None
        return image_rows(data)[0], numpy_vectors(data.column("vector"), self.dim)[0]

    def nearest(
        self, vector: np.ndarray, k: int, where: str | None = None, *, offset: int = 0
    ) -> list[tuple[ImageRow, float]]:
        """The k rows closest to `vector` after skipping `offset`, with cosine similarity,
        best first."""
        data = self._nearest(vector, k, where, [f.name for f in fields(ImageRow)], offset)
        similarities = [1.0 - d for d in data.column("_distance").to_pylist()]
        return list(zip(image_rows(data), similarities, strict=True))

    def hybrid(
        self, vector: np.ndarray, text: str, k: int, where: str | None = None, *, offset: int = 0
    ) -> list[tuple[ImageRow, float]]:
        """Vector search fused with BM25 keyword search on name, folder and label (reciprocal
        rank fusion). Ranked by the fusion; each row comes with its exact cosine similarity."""
        from lancedb.rerankers import RRFReranker

        columns = [c for c in FTS_COLUMNS if c in self._table.schema.names]
        indexed = {c.columns[0] for c in self._table.list_indices() if c.index_type == "FTS"}
        if not set(columns) <= indexed:
            self.build_index(keywords_only=True)
        vector = np.asarray(vector, np.float32)
        query = (
            self._table.search(query_type="hybrid", fts_columns=columns)
            .vector(vector)
            .text(text)
            .distance_type("cosine")
            .nprobes(self.policy.nprobes)
            .refine_factor(self.policy.refine_factor)
        )
        if where:
            query = query.where(where, prefilter=True)
        query = query.select([f.name for f in fields(ImageRow)] + ["vector"]).limit(k + offset)
        data = _run(query.rerank(RRFReranker()), where).slice(offset)
        matrix = numpy_vectors(data.column("vector"), self.dim)
        similarities = (matrix @ vector) / np.maximum(
            np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector), 1e-12
        )
        return list(zip(image_rows(data), similarities.tolist(), strict=True))

    def rows(self, where: str | None = None) -> list[ImageRow]:
        query = self._table.search().select([f.name for f in fields(ImageRow)])
        if where:
            query = query.where(where)
        return image_rows(_run(query.limit(None), where))

    def vectors(
        self, where: str | None = None, batch_rows: int = 8192
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """(paths, vectors) of the rows matching `where`, a batch at a time."""
        query = self._table.search().select(["path", "vector"])
        if where:
            query = query.where(where)
        try:
            batches = query.limit(None).to_batches(batch_rows)
            for batch in batches:
                if batch.num_rows:
                    yield batch.column(0).to_pylist(), numpy_vectors(batch.column(1), self.dim)
        except (ValueError, RuntimeError) as exc:
            raise _filter_error(where, exc) from exc

    @property
    def has_labels(self) -> bool:
        return "label" in self._table.schema.names

    def set_labels(
        self, paths: Sequence[str], labels: Sequence[str], probabilities: np.ndarray, label_set: str
    ) -> None:
        """Store each photo's label, adding the label columns to a table that lacks them."""
        if not self.has_labels:
            self._table.add_columns(list(LABEL_FIELDS))
        data = pa.table(
            {
                "path": list(paths),
                "label": list(labels),
                "label_probability": pa.array(probabilities, pa.float32()),
                "label_set": [label_set] * len(paths),
            }
        )
        self._table.merge_insert("path").when_matched_update_all().execute(data)


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
                "vector": arrow_vectors(vectors, self.dim),
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
        return data.column("text").to_pylist(), numpy_vectors(data.column("vector"), self.dim)

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


def _run(query: Any, where: str | None) -> pa.Table:
    try:
        return query.to_arrow()
    except (ValueError, RuntimeError) as exc:
        raise _filter_error(where, exc) from exc


def _filter_error(where: str | None, exc: Exception) -> Exception:
    if not where:
        return exc
    reason = str(exc).split(", /")[0]  # drop the Rust source location
    return StoreError(
        f"the filter cannot be applied: {reason}\n  where: {where}\n"
        "Fix: use the columns path, folder, name, suffix, size, width, height, format, "
        "taken_at, captured_at (and label after `crossmodal classify --all`), with SQL "
        "syntax, e.g. \"width >= 3000 AND format = 'JPEG'\""
    )


def _scalar_config(kind: str) -> Any:
    from lancedb.index import Bitmap, BTree

    return BTree() if kind == "btree" else Bitmap()


def _partitions(index_name: str) -> int | None:
    match = re.fullmatch(r"vector_p(\d+)", index_name)
    return int(match.group(1)) if match else None


class Store:
    """A crossmodal database: a LanceDB directory with one image table and any text tables."""

    def __init__(self, db_dir: Path, connection: Any, policy: IndexPolicy | None = None) -> None:
        self.db_dir = db_dir
        self._db = connection
        self.policy = policy or IndexPolicy()  # when tables get ANN indexes, how they are searched

    @classmethod
    def open(
        cls,
        db_dir: str | os.PathLike[str],
        *,
        create: bool = False,
        policy: IndexPolicy | None = None,
    ) -> Store:
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
            # no read_consistency_interval: each table use checks out the latest commit itself
            connection = lancedb.connect(str(path))
            return cls(path, connection, policy)
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
                    IMAGES,
                    schema=image_schema(identity.dim, identity),
                    exist_ok=True,
                    storage_options={"new_table_data_storage_version": FILE_FORMAT},
                ),
                identity,
                self.policy,
            )
        table = self._open(IMAGES)
        self._check(table, IMAGES, identity)
        return ImageTable(table, identity, self.policy)

    def texts(self, name: str, identity: ModelIdentity, *, create: bool = False) -> TextTable:
        full = TEXT_PREFIX + name
        if create and full not in self.table_names():
            return TextTable(
                self._db.create_table(
                    full,
                    schema=text_schema(identity.dim, identity),
                    exist_ok=True,
                    storage_options={"new_table_data_storage_version": FILE_FORMAT},
                ),
                identity,
                self.policy,
            )
        table = self._open(full)
        self._check(table, full, identity)
        return TextTable(table, identity, self.policy)

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
