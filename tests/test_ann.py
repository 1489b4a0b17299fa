"""The vector index policy: exact while small, IVF_SQ once large, exact cosine scores either way,
and correct results while rows are added and removed."""

from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

from crossmodal.model.specs import ModelIdentity
from crossmodal.store import Store
from crossmodal.store.filters import Filters
from crossmodal.store.records import ImageRow, IndexPolicy

DIM = 16
IDENTITY = ModelIdentity("synthetic", "synthetic", DIM, "none")
POLICY = IndexPolicy(min_rows=400, partition_rows=100, nprobes=4, refine_factor=10)


def rows(start, count):
    when = datetime(2020, 1, 1)
    return [
        ImageRow(
            path=f"/p/{'even' if i % 2 == 0 else 'odd'}/img_{i:05d}.jpg",
            folder=f"/p/{'even' if i % 2 == 0 else 'odd'}",
            name=f"img_{i:05d}.jpg",
            suffix=".jpg",
            size=1000 + i,
            mtime_ns=0,
            content_hash=f"h{i}",
            width=100,
            height=80,
            format="JPEG",
            captured_at=None,
            taken_at=when,
            indexed_at=when,
        )
        for i in range(start, start + count)
    ]


def vectors(start, count):
    # clustered, like real embeddings: 20 centres, points spread around them
    rng = np.random.default_rng(start)
    centres = np.random.default_rng(0).standard_normal((20, DIM))
    x = centres[rng.integers(0, 20, count)] + 0.3 * rng.standard_normal((count, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def table(tmp_path):
    store = Store.open(tmp_path / "db", create=True, policy=POLICY)
    table = store.images(IDENTITY, create=True)
    table.append(rows(0, 300), vectors(0, 300))  # a first bulk load
    table.upsert(rows(300, 300), vectors(300, 300))
    assert table.count() == 600
    return table


def exact(matrix, query, k):
    sims = matrix @ query
    order = np.argsort(-sims, kind="stable")[:k]
    return order, sims[order]


def test_small_tables_stay_exact_and_large_ones_get_an_index(tmp_path):
    store = Store.open(tmp_path / "db", create=True, policy=POLICY)
    table = store.images(IDENTITY, create=True)
    table.upsert(rows(0, 300), vectors(0, 300))
    state = table.maintain_index()
    assert (state.rows, state.vector_index) == (300, None)
    assert state.keyword_columns == ("folder", "name")  # keyword search works at any size
    table.upsert(rows(300, 200), vectors(300, 200))
    state = table.maintain_index()
    assert (state.rows, state.vector_index, state.unindexed_rows) == (500, "IVF_SQ", 0)
    assert state.scalar_columns == ("folder", "format", "path", "taken_at")


def test_a_folder_or_date_filter_is_answered_from_a_scalar_index_not_a_scan(table):
    from crossmodal.store.where import where_clause

    table.maintain_index()
    for filters in (Filters(folder="/p/odd"), Filters(after=datetime(2019, 6, 1))):
        query = table._table.search(vectors(10_000, 1)[0]).nprobes(4)
        plan = query.where(where_clause(filters), prefilter=True).explain_plan(verbose=True)
        assert "ScalarIndexQuery" in plan, plan
        assert "full_filter" not in plan, plan  # no read of the column for every row


def test_ann_scores_are_exact_cosine_and_recall_is_high(table):
    table.maintain_index()
    assert table.index_state().vector_index == "IVF_SQ"
    matrix = np.concatenate([vectors(0, 300), vectors(300, 300)])  # as the fixture wrote them
    queries = vectors(10_000, 20)
    found = 0
    for query in queries:
        hits = table.nearest(query, 10)
        expected, _ = exact(matrix, query, 10)
        for row, score in hits:
            index = int(row.name[4:9])
            assert score == pytest.approx(float(matrix[index] @ query), abs=1e-5)
        found += len({int(r.name[4:9]) for r, _ in hits} & set(expected.tolist()))
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert found / (10 * len(queries)) >= 0.9


def test_rows_added_after_the_index_are_found_at_once_and_folded_in_by_maintenance(table):
    table.maintain_index()
    newcomer = np.zeros(DIM, np.float32)
    newcomer[0] = 1.0
    table.upsert(rows(600, 1), newcomer[None, :])
    assert table.index_state().unindexed_rows == 1
    assert table.nearest(newcomer, 1)[0][0].name == "img_00600.jpg"
    state = table.maintain_index()
    assert (state.rows, state.unindexed_rows) == (601, 0)
    assert table.nearest(newcomer, 1)[0][0].name == "img_00600.jpg"
    table.delete_paths(["/p/even/img_00600.jpg"])
    assert all(r.name != "img_00600.jpg" for r, _ in table.nearest(newcomer, 5))


def test_narrow_filter_and_paging_with_an_index(table):
    table.maintain_index()
    query = vectors(10_000, 1)[0]
    hits = table.nearest(query, 5, Filters(sql="name = 'img_00007.jpg' OR name = 'img_00321.jpg'"))
    assert sorted(r.name for r, _ in hits) == ["img_00007.jpg", "img_00321.jpg"]
    first = table.nearest(query, 10)
    second = table.nearest(query, 5, offset=5)
    assert [r.path for r, _ in second] == [r.path for r, _ in first[5:]]
    odd = table.nearest(query, 10, Filters(folder="/p/odd"))
    assert len(odd) == 10 and all(r.folder == "/p/odd" for r, _ in odd)


@pytest.mark.parametrize(
    "how",
    [
        {},  # the default: so few rows kept that they are searched exactly
        {"exact_filter_rows": 0, "filter_candidates": 1},  # probed: 4 partitions, then all 6
    ],
)
def test_a_filter_keeping_rows_outside_the_probed_partitions_still_finds_them_all(
    table, tmp_path, how
):
    table.maintain_index()
    table = Store.open(tmp_path / "db", policy=replace(POLICY, **how)).images(IDENTITY)
    matrix = np.concatenate([vectors(0, 300), vectors(300, 300)])
    query = vectors(10_000, 1)[0]
    farthest = np.argsort(matrix @ query)[:3]  # in partitions the query does not probe first
    names = ", ".join(f"'img_{i:05d}.jpg'" for i in farthest)
    hits = table.nearest(query, 10, Filters(sql=f"name IN ({names})"))
    assert sorted(int(r.name[4:9]) for r, _ in hits) == sorted(farthest.tolist())
    if not how:  # hybrid search, whose vector half runs the same way
        mixed = table.hybrid(query, "nothing matches this", 10, Filters(sql=f"name IN ({names})"))
        assert sorted(int(r.name[4:9]) for r, _ in mixed) == sorted(farthest.tolist())


def test_a_filter_probes_more_partitions_the_fewer_rows_it_keeps(table, tmp_path):
    from crossmodal.store.upkeep import filtered_probes

    lance = table._table
    odd = "folder = '/p/odd'"  # 300 of 600 rows
    assert filtered_probes(lance, odd, POLICY) is None  # no ANN index yet: exact
    table.maintain_index()  # 6 partitions, 4 probed
    assert filtered_probes(lance, odd, POLICY) is None  # 300 rows <= 5,000: exact
    wide = replace(POLICY, exact_filter_rows=100)
    # partitions to hold `filter_candidates` of the kept rows: 6 x candidates / 300
    assert filtered_probes(lance, odd, replace(wide, filter_candidates=100)) == 4  # never < 4
    assert filtered_probes(lance, odd, replace(wide, filter_candidates=250)) == 5
    assert filtered_probes(lance, odd, replace(wide, filter_candidates=600)) == 6  # all
    assert filtered_probes(lance, "size < 1100", replace(wide, exact_filter_rows=99)) == 6


def test_how_a_filter_runs_is_decided_again_after_a_write(table, tmp_path):
    table.maintain_index()
    policy = replace(POLICY, exact_filter_rows=300)
    table = Store.open(tmp_path / "db", policy=policy).images(IDENTITY)
    odd = "(folder = '/p/odd')"
    assert table._filtered_probes(odd) is None  # 300 rows kept: exact
    table.upsert(rows(601, 1), vectors(601, 1))  # one more odd photo
    assert table._filtered_probes(odd) == 6  # 301 kept: probed, 600 candidates need all 6


def test_build_on_demand_refuses_a_tiny_table(tmp_path):
    store = Store.open(tmp_path / "db", create=True, policy=POLICY)
    table = store.images(IDENTITY, create=True)
    table.upsert(rows(0, 10), vectors(0, 10))
    with pytest.raises(Exception, match="at least 256"):
        table.build_index()


def test_an_outgrown_index_is_retrained_with_more_partitions(table):
    assert table.maintain_index().partitions == 6
    table.upsert(rows(600, 700), vectors(600, 700))
    state = table.maintain_index()
    assert (state.rows, state.vector_index, state.partitions, state.unindexed_rows) == (
        1300,
        "IVF_SQ",
        13,
        0,
    )
    assert len([c for c in table._table.list_indices() if c.columns == ["vector"]]) == 1


def test_a_large_table_folds_a_few_new_rows_only_once_there_are_enough(tmp_path):
    policy = IndexPolicy(
        min_rows=400, partition_rows=100, nprobes=4, fold_below_rows=500, fold_fraction=0.01
    )
    table = Store.open(tmp_path / "db", create=True, policy=policy).images(IDENTITY, create=True)
    table.append(rows(0, 600), vectors(0, 600))
    assert table.maintain_index().unindexed_rows == 0
    newcomer = np.zeros(DIM, np.float32)
    newcomer[0] = 1.0
    table.upsert(rows(600, 5), np.tile(newcomer, (5, 1)))
    assert table.maintain_index().unindexed_rows == 5  # 5 < 1 % of 605: they wait
    assert table.nearest(newcomer, 1)[0][0].name == "img_00600.jpg"  # and are found meanwhile
    table.upsert(rows(605, 2), vectors(605, 2))
    assert table.maintain_index().unindexed_rows == 0  # 7 >= 1 % of 607: folded in
    table.upsert(rows(607, 1), vectors(607, 1))
    assert table.maintain_index(force=True).unindexed_rows == 0  # `crossmodal optimize`


def test_stored_files_of_a_prefix_leave_out_a_sibling_folder(table):
    table.upsert(rows(0, 1)[0:0] or [r for r in rows(700, 1)], vectors(700, 1))
    sibling = rows(701, 1)[0]

    table.upsert(
        [replace(sibling, path="/p/even-old/x.jpg", folder="/p/even-old")], vectors(701, 1)
    )
    stored = table.stored_files("/p/even/")
    assert len(stored) == 301 and all(p.startswith("/p/even/") for p in stored)
    assert "/p/even-old/x.jpg" in table.stored_files()
