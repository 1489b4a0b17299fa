"""Index upkeep: when a table gets its ANN, scalar and keyword indexes, how they follow writes,
and how a filtered search uses them.

Works on a LanceDB table handed over by `crossmodal.store.tables`; callers use the table methods.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from crossmodal.errors import CrossmodalError
from crossmodal.store.records import FilterReach, IndexPolicy, IndexState

INDEX_TYPES = ("IVF_RQ", "IVF_SQ", "IVF_PQ")  # the ANN indexes a policy may ask for
FTS_COLUMNS = ("name", "folder", "label")  # what keyword (hybrid) search reads
# what filters ask: a folder filter is a prefix range on `folder` (without its index a filtered
# query at 1M rows scanned every folder name first: 24 of its 30 ms), a date one on `taken_at`
SCALAR_INDEXES = {
    "path": "btree",
    "folder": "btree",
    "taken_at": "btree",
    "format": "bitmap",
    "label": "bitmap",
}


def index_state(table: Any) -> IndexState:
    rows = int(table.count_rows())
    vector_index, unindexed, partitions = None, 0, None
    keyword: list[str] = []
    scalar: list[str] = []
    for config in table.list_indices():
        column = config.columns[0]
        if config.index_type == "FTS":
            keyword.append(column)
        elif column == "vector":
            stats = table.index_stats(config.name)
            vector_index = stats.index_type if stats else config.index_type
            unindexed = int(stats.num_unindexed_rows) if stats else 0
            partitions = _partitions(config.name)
        else:
            scalar.append(column)
    return IndexState(
        rows, vector_index, unindexed, partitions, tuple(sorted(keyword)), tuple(sorted(scalar))
    )


def filter_reach(table: Any, where: str, policy: IndexPolicy) -> FilterReach:
    """How many rows `where` keeps (from the scalar indexes: 1-9 ms at 1M rows, the most for
    wide filters) and how many partitions the ANN index has; the count is skipped without one."""
    vector = [c for c in table.list_indices() if c.columns == ["vector"]]
    if not vector:
        return FilterReach(None, None)
    partitions = _partitions(vector[0].name) or max(1, table.count_rows() // policy.partition_rows)
    return FilterReach(int(table.count_rows(where)), partitions)


def filtered_probes(reach: FilterReach, wanted: int, policy: IndexPolicy) -> int | None:
    """How a search for the best `wanted` rows a filter keeps should run: None to compare the
    query with every kept row (no ANN index, or at most `exact_filter_rows` kept), else how
    many IVF partitions to probe so that they hold, on average, `filter_candidates` kept rows
    or twice `wanted`, whichever is more, and never fewer than `nprobes`.

    Probing only the usual partitions finds only the kept rows that lie in them: at 1M rows, a
    folder of 1,000 photos left 65 candidates in 16 partitions and recall@10 fell to 0.65
    (`benchmarks/ann_pareto.py`). A page deeper than the candidates probes more partitions.
    """
    if reach.partitions is None or reach.kept is None or reach.kept <= policy.exact_filter_rows:
        return None
    candidates = max(policy.filter_candidates, 2 * wanted)
    needed = -(-candidates * reach.partitions // reach.kept)  # ceiling
    return min(reach.partitions, max(policy.nprobes, needed))


def build_indexes(table: Any, policy: IndexPolicy, *, keywords_only: bool = False) -> IndexState:
    """Build (or rebuild) the ANN index, the scalar indexes and the keyword indexes now."""
    from lancedb.index import FTS

    rows = int(table.count_rows())
    if not keywords_only:
        if rows < 256:
            raise CrossmodalError(
                f"table {table.name!r} has {rows} rows; an ANN index needs at least 256 "
                "(smaller tables are searched exactly, which is already fast)"
            )
        _build_vector_index(table, policy, rows)
        build_scalar_indexes(table)
    for column in FTS_COLUMNS:
        if column in table.schema.names:
            table.create_index(column, config=FTS(), replace=True)
    return index_state(table)


def maintain(table: Any, policy: IndexPolicy, *, force: bool = False) -> IndexState:
    """What to call after writes: builds the ANN index once the table is large enough,
    folds new rows into existing indexes, retrains one the table has outgrown or one of
    another type than the policy's (a table indexed before the default changed), and
    compacts the files. Cheap when nothing changed. On a large table, a few new rows wait
    until there are enough of them to be worth a fold (`IndexPolicy.fold_fraction`) unless
    `force` is set."""
    state = index_state(table)
    trained = (state.partitions or 0) * policy.partition_rows
    outgrown = bool(state.partitions) and state.rows > policy.retrain_growth * trained
    if (
        (state.vector_index is None and state.rows >= policy.min_rows)
        or outgrown
        or state.vector_index not in (None, vector_index_type(policy, _dimension(table)))
    ):
        _compact(table)  # first: an index built on compacted files is faster to search
        return build_indexes(table, policy)
    names = table.schema.names
    if set(c for c in FTS_COLUMNS if c in names) - set(state.keyword_columns):
        build_indexes(table, policy, keywords_only=True)
    if state.vector_index is not None:  # e.g. `label`, added after the build
        build_scalar_indexes(table, skip=state.scalar_columns)
    waiting = state.unindexed_rows < policy.fold_fraction * state.rows
    if not force and state.vector_index and state.rows > policy.fold_below_rows and waiting:
        return state
    _compact(table)
    return index_state(table)


def build_scalar_indexes(table: Any, *, skip: tuple[str, ...] = ()) -> None:
    """(Re)build the index of each column in SCALAR_INDEXES the table has, but those in `skip`."""
    from lancedb.index import Bitmap, BTree

    for column, kind in SCALAR_INDEXES.items():
        if column in table.schema.names and column not in skip:
            config = BTree() if kind == "btree" else Bitmap()
            table.create_index(column, config=config, replace=True)


def _compact(table: Any) -> None:
    """Merge new rows into every index, compact small files, and delete the files of
    versions older than ten minutes (a compaction would otherwise double the disk use for
    LanceDB's default week). Every table use checks out the latest version, so only a query
    running for ten minutes could still need an old one."""
    table.optimize(cleanup_older_than=timedelta(minutes=10))


def vector_index_type(policy: IndexPolicy, dimension: int) -> str:
    """The ANN index a table of `dimension`-wide vectors gets: the policy's, but IVF_SQ where
    LanceDB's IVF_RQ cannot take the width (it needs a multiple of 8; CLIP's 512, 768 and
    1024 all are, a custom or test model may not be)."""
    if policy.index_type not in INDEX_TYPES:
        raise CrossmodalError(
            f"unknown index type {policy.index_type!r}; choose {', '.join(INDEX_TYPES)}"
        )
    if policy.index_type == "IVF_RQ" and dimension % 8:
        return "IVF_SQ"
    return policy.index_type


def _dimension(table: Any) -> int:
    return int(table.schema.field("vector").type.list_size)


def _build_vector_index(table: Any, policy: IndexPolicy, rows: int) -> None:
    from lancedb import index

    configs: dict[str, Callable[..., Any]] = {
        "IVF_SQ": index.IvfSq,
        "IVF_RQ": functools.partial(index.IvfRq, num_bits=policy.num_bits),
        "IVF_PQ": index.IvfPq,
    }
    kind = vector_index_type(policy, _dimension(table))
    partitions = max(1, rows // policy.partition_rows)
    for config in table.list_indices():
        if config.columns == ["vector"] and config.name != f"vector_p{partitions}":
            # until the new one is built, searches scan exactly: slower, never wrong
            table.drop_index(config.name)
    table.create_index(
        "vector",
        config=configs[kind](distance_type="cosine", num_partitions=partitions),
        replace=True,
        # LanceDB does not report the partition count; the name keeps it for retraining
        name=f"vector_p{partitions}",
    )


def _partitions(index_name: str) -> int | None:
    match = re.fullmatch(r"vector_p(\d+)", index_name)
    return int(match.group(1)) if match else None
