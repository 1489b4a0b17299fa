"""Image and text tables: typed rows in and out, nearest neighbours, filters, hybrid search.

Each table wraps one LanceDB table; `crossmodal.store.database` opens and creates them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

import crossmodal.store.scanner as scanner
import crossmodal.store.upkeep as upkeep
from crossmodal.model.specs import ModelIdentity
from crossmodal.store.failures import damaged, filter_error, guarded_filter, reports_damage
from crossmodal.store.filters import Filters
from crossmodal.store.records import (
    LABEL_FIELDS,
    FilterReach,
    ImageRow,
    IndexPolicy,
    IndexState,
    arrow_vectors,
    image_rows,
    numpy_vectors,
)
from crossmodal.store.upkeep import FTS_COLUMNS
from crossmodal.store.where import label_set_is, path_in, sql_string, where_clause

_DELETE_CHUNK = 500
# runs one vector query: (where, probes or None for exact, expand) -> the rows found
_Run = Callable[[str | None, int | None, bool], pa.Table]


@reports_damage
class _Table:
    """Shared behaviour of image and text tables: identity, counting, nearest neighbours, and
    the upkeep of their indexes."""

    def __init__(
        self, table: Any, identity: ModelIdentity, policy: IndexPolicy | None = None
    ) -> None:
        self._lance = table
        self.identity = identity
        self.name: str = table.name
        self.db_dir = str(table.uri).rsplit("/", 1)[0]  # for messages: the folder of the tables
        self.policy = policy or IndexPolicy()
        # (table version, filter) -> its reach: counting the rows a filter keeps costs 1-9 ms
        # at 1M rows, and a person often searches within one folder, page after page
        self._reaches: dict[tuple[int, str], FilterReach] = {}
        self._lance_dataset: Any = None  # see `_dataset`

    @property
    def _table(self) -> Any:
        """The LanceDB table at its latest commit, which may come from another process (an
        index run, or a compaction that removed the files of older versions). Connections do
        not refresh on their own: that checks on each of a search's internal reads (~2 ms per
        search at 1M rows); one checkout per use costs ~0.3 ms."""
        self._lance.checkout_latest()
        return self._lance

    def _dataset(self) -> Any:
        """The Lance dataset under the table at its latest commit, which vector searches run on
        (`crossmodal.store.scanner`). Asking for the latest commit costs ~0.03 ms; moving to
        it keeps the index partitions already cached."""
        dataset = self._lance_dataset
        if dataset is None:  # at the latest commit: older versions' files may be cleaned up
            dataset = self._table.to_lance()
        if dataset.version != (latest := dataset.latest_version):
            dataset = dataset.checkout_version(latest)
        self._lance_dataset = dataset  # one assignment: searching threads each keep theirs
        return dataset

    @property
    def dim(self) -> int:
        return self.identity.dim

    def count(self, filters: Filters | None = None) -> int:
        where = where_clause(filters)
        return int(guarded_filter(lambda: self._table.count_rows(where), where))

    def _nearest(
        self,
        vector: np.ndarray,
        k: int,
        filters: Filters | None,
        columns: list[str],
        offset: int = 0,
    ) -> pa.Table:
        try:
            return self._search(vector, k, filters, columns, offset)
        except Exception as exc:
            if not damaged(exc):
                raise
            # the table may have been dropped and made again (`index --rebuild` in another
            # process) up to the version this dataset knows: open it anew, once
            self._lance_dataset = None
            return self._search(vector, k, filters, columns, offset)

    def _search(
        self, vector: np.ndarray, k: int, filters: Filters | None, columns: list[str], offset: int
    ) -> pa.Table:
        dataset = self._dataset()
        query = np.asarray(vector, np.float32)

        def run(where: str | None, probes: int | None, expand: bool) -> pa.Table:
            return guarded_filter(
                lambda: scanner.nearest(
                    dataset, query, k + offset, columns, self.policy, where, probes, expand
                ),
                where,
            )

        return self._answer(run, where_clause(filters), k + offset, dataset.version).slice(offset)

    def _answer(self, run: _Run, where: str | None, wanted: int, version: int) -> pa.Table:
        """Run a vector (or hybrid) query for the best `wanted` rows, filtered by `where` as
        `upkeep.filtered_probes` plans it. `run(where, probes, expand)` runs it: with `probes`
        partitions (None: exactly, over every row kept), or from `probes` on as many as it
        takes to find `wanted` rows when `expand`."""
        if not where:
            return run(None, self.policy.nprobes, False)
        reach = self._reach(version, where)
        probes = upkeep.filtered_probes(reach, wanted, self.policy)
        found = run(where, probes, False)
        short = len(found) < min(wanted, reach.kept or 0)
        if probes is not None and probes < (reach.partitions or 0) and short:
            # the probed partitions held too few of the rows kept: probe more. Only then:
            # asked from the start, Lance probes every partition for any filter (27 against
            # 8 ms at 1M rows, benchmarks/ann_pareto.py)
            found = run(where, probes, True)
        return found

    def _reach(self, version: int, where: str) -> FilterReach:
        key = (version, where)
        reach = self._reaches.get(key)  # one lookup: another thread may clear meanwhile
        if reach is None:
            table = self._table
            reach = guarded_filter(lambda: upkeep.filter_reach(table, where, self.policy), where)
            if len(self._reaches) >= 64:
                self._reaches.clear()
            self._reaches[key] = reach
        return reach

    def index_state(self) -> IndexState:
        return upkeep.index_state(self._table)

    def build_index(self, *, keywords_only: bool = False) -> IndexState:
        """Build (or rebuild) the ANN index, the scalar indexes and the keyword indexes now."""
        return upkeep.build_indexes(self._table, self.policy, keywords_only=keywords_only)

    def maintain_index(self, *, force: bool = False) -> IndexState:
        """What to call after writes: builds the ANN index once the table is large enough,
        folds new rows into existing indexes, retrains one the table has outgrown, and
        compacts the files. Cheap when nothing changed. A large table folds a few new rows
        only once there are enough of them (`IndexPolicy.fold_fraction`), or when `force`d."""
        return upkeep.maintain(self._table, self.policy, force=force)


@reports_damage
class ImageTable(_Table):
    """The table of indexed images."""

    def stored_files(self, prefix: str | None = None) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, content_hash) for every row, or every row whose path starts
        with `prefix` (a range on the path index): what re-indexing compares."""
        # only these columns: reading whole rows (vectors are most of their bytes) held 2.3 GB
        # per million rows (benchmarks/ray_engine.py scale)
        columns = ["path", "size", "mtime_ns", "content_hash"]
        query = self._table.search().select(columns)
        if prefix:
            after = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # the first string past the prefix
            query = query.where(f"path >= {sql_string(prefix)} AND path < {sql_string(after)}")
        data = query.limit(None).to_arrow()
        cols = [data.column(i).to_pylist() for i in range(4)]
        return {p: (s, m, h) for p, s, m, h in zip(*cols, strict=True)}

    def records_for(self, paths: Sequence[str]) -> dict[str, tuple[ImageRow, np.ndarray]]:
        """Rows and vectors of the given paths (those that are stored)."""
        out: dict[str, tuple[ImageRow, np.ndarray]] = {}
        for start in range(0, len(paths), _DELETE_CHUNK):
            chunk = paths[start : start + _DELETE_CHUNK]
            data = self._table.search().where(path_in(chunk)).limit(len(chunk)).to_arrow()
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
            self._table.delete(path_in(paths[start : start + _DELETE_CHUNK]))

    def get(self, path: str) -> tuple[ImageRow, np.ndarray] | None:
        data = self._table.search().where(f"path = {sql_string(path)}").limit(1).to_arrow()
        if data.num_rows == 0:
            return None
        return image_rows(data)[0], numpy_vectors(data.column("vector"), self.dim)[0]

    def nearest(
        self, vector: np.ndarray, k: int, filters: Filters | None = None, *, offset: int = 0
    ) -> list[tuple[ImageRow, float]]:
        """The k rows closest to `vector` after skipping `offset`, with cosine similarity,
        best first."""
        data = self._nearest(vector, k, filters, [f.name for f in fields(ImageRow)], offset)
        similarities = [1.0 - d for d in data.column("_distance").to_pylist()]
        return list(zip(image_rows(data), similarities, strict=True))

    def hybrid(
        self,
        vector: np.ndarray,
        text: str,
        k: int,
        filters: Filters | None = None,
        *,
        offset: int = 0,
    ) -> list[tuple[ImageRow, float]]:
        """Vector search fused with BM25 keyword search on name, folder and label (reciprocal
        rank fusion). Ranked by the fusion; each row comes with its exact cosine similarity."""
        from lancedb.rerankers import RRFReranker

        where = where_clause(filters)
        table = self._table  # one checkout of the latest version for the whole query
        columns = [c for c in FTS_COLUMNS if c in table.schema.names]
        indexed = {c.columns[0] for c in table.list_indices() if c.index_type == "FTS"}
        if not set(columns) <= indexed:
            self.build_index(keywords_only=True)
            table = self._table  # the build committed a new version
        vector = np.asarray(vector, np.float32)
        query = (
            table.search(query_type="hybrid", fts_columns=columns)
            .vector(vector)
            .text(text)
            .distance_type("cosine")
            .refine_factor(self.policy.refine_factor)
            .select([f.name for f in fields(ImageRow)] + ["vector"])
            .limit(k + offset)
            .rerank(RRFReranker())
        )

        def run(where: str | None, probes: int | None, expand: bool) -> pa.Table:
            # the vector half runs as a filtered `nearest` does
            hybrid = query.where(where, prefilter=True) if where else query
            hybrid = hybrid.bypass_vector_index() if probes is None else hybrid.nprobes(probes)
            return _run(hybrid.maximum_nprobes(0) if expand else hybrid, where)

        data = self._answer(run, where, k + offset, int(table.version)).slice(offset)
        matrix = numpy_vectors(data.column("vector"), self.dim)
        similarities = (matrix @ vector) / np.maximum(
            np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector), 1e-12
        )
        return list(zip(image_rows(data), similarities.tolist(), strict=True))

    def rows(self, filters: Filters | None = None) -> list[ImageRow]:
        where = where_clause(filters)
        query = self._table.search().select([f.name for f in fields(ImageRow)])
        if where:
            query = query.where(where)
        return image_rows(_run(query.limit(None), where))

    def vectors(
        self, filters: Filters | None = None, batch_rows: int = 8192
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """(paths, vectors) of the rows matching `filters`, a batch at a time."""
        yield from self._vectors(where_clause(filters), batch_rows)

    def unlabelled_vectors(
        self, label_set: str, filters: Filters | None = None, batch_rows: int = 8192
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Like `vectors`, but only rows not labelled from `label_set` yet."""
        stale = label_set_is(label_set, equal=False) if self.has_labels else None
        yield from self._vectors(where_clause(filters, stale), batch_rows)

    def count_labelled(self, label_set: str, filters: Filters | None = None) -> int:
        """Rows matching `filters` that carry a label from `label_set`."""
        if not self.has_labels:
            return 0
        return int(
            self._table.count_rows(where_clause(filters, label_set_is(label_set, equal=True)))
        )

    def label_values(self) -> list[str]:
        """The distinct labels stored by `classify --all`, most common first."""
        if not self.has_labels:
            return []
        # only the label column: the table's vectors are most of its bytes
        data = self._table.search().select(["label"]).limit(None).to_arrow()
        column = data.column("label").drop_null()
        counts = column.value_counts().to_pylist()
        return [c["values"] for c in sorted(counts, key=lambda c: -c["counts"])]

    def _vectors(
        self, where: str | None, batch_rows: int
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        query = self._table.search().select(["path", "vector"])
        if where:
            query = query.where(where)
        try:
            batches = query.limit(None).to_batches(batch_rows)
            for batch in batches:
                if batch.num_rows:
                    yield batch.column(0).to_pylist(), numpy_vectors(batch.column(1), self.dim)
        except Exception as exc:
            refused = filter_error(where, exc)
            if refused is None:
                raise
            raise refused from exc

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


@reports_damage
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
    return guarded_filter(query.to_arrow, where)
