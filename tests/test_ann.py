"""The vector index policy: exact while small, IVF_RQ once large, exact cosine scores either way,
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
    assert (state.rows, state.vector_index, state.unindexed_rows) == (500, "IVF_RQ", 0)
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
    assert table.index_state().vector_index == "IVF_RQ"
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


PROBED = {"exact_filter_rows": 0, "filter_candidates": 1}  # any filter probes: 4 of 6 at first


@pytest.mark.parametrize("how", [{}, PROBED], ids=["exact", "probed"])
def test_a_filter_keeping_rows_outside_the_probed_partitions_still_finds_them_all(
    table, tmp_path, how
):
    table.maintain_index()
    table = Store.open(tmp_path / "db", policy=replace(POLICY, **how)).images(IDENTITY)
    matrix = np.concatenate([vectors(0, 300), vectors(300, 300)])
    query = vectors(10_000, 1)[0]
    farthest = np.argsort(matrix @ query)[:3]  # in partitions the query does not probe first
    names = ", ".join(f"'img_{i:05d}.jpg'" for i in farthest)
    only = Filters(sql=f"name IN ({names})")
    for hits in (table.nearest(query, 10, only), table.hybrid(query, "no such words", 10, only)):
        assert sorted(int(r.name[4:9]) for r, _ in hits) == sorted(farthest.tolist())
    # the best one alone: probed, 4 partitions hold none of the 3, so all 6 are searched again
    ((best, _),) = table.nearest(query, 1, only)
    assert int(best.name[4:9]) == farthest[-1]


def test_pages_of_a_probed_filter_show_each_photo_once(table, tmp_path):
    """Within the first `filter_candidates / 2` hits the probed partitions stay the same, so
    pages neither repeat nor skip a photo (deeper pages probe more partitions)."""
    table.maintain_index()
    policy = replace(POLICY, exact_filter_rows=0, filter_candidates=300)  # 4 probed up to 150
    table = Store.open(tmp_path / "db", policy=policy).images(IDENTITY)
    query, odd = vectors(10_000, 1)[0], Filters(folder="/p/odd")  # 300 rows
    pages = [table.nearest(query, 10, odd, offset=offset) for offset in range(0, 150, 10)]
    names = [row.name for page in pages for row, _ in page]
    assert len(names) == 150 and len(set(names)) == 150
    assert names == [row.name for row, _ in table.nearest(query, 150, odd)]


def test_a_filter_probes_more_partitions_the_fewer_rows_it_keeps():
    from crossmodal.store.records import FilterReach
    from crossmodal.store.upkeep import filtered_probes

    policy = replace(POLICY, exact_filter_rows=100)  # 4 probed, 600 candidates wanted
    assert filtered_probes(FilterReach(None, None), 10, policy) is None  # no index: exact
    assert filtered_probes(FilterReach(100, 6), 10, policy) is None  # few rows kept: exact
    assert filtered_probes(FilterReach(3600, 6), 10, policy) == 4  # 4 hold 2,400: never < 4
    assert filtered_probes(FilterReach(720, 6), 10, policy) == 5  # 5 partitions hold 600
    assert filtered_probes(FilterReach(101, 6), 10, policy) == 6  # all
    few = replace(policy, filter_candidates=1)
    assert filtered_probes(FilterReach(3000, 6), 1000, few) == 4  # 2,000 kept rows in 4
    assert filtered_probes(FilterReach(1200, 6), 500, few) == 5  # a deep page: 1,000 in 5


def test_a_filter_is_counted_only_with_an_index_and_again_after_a_write(table, tmp_path):
    from crossmodal.store.records import FilterReach

    odd = "(folder = '/p/odd')"
    assert table._reach(table._dataset().version, odd) == FilterReach(
        None, None
    )  # exact: not counted
    table.maintain_index()
    assert table._reach(table._dataset().version, odd) == FilterReach(300, 6)
    table.upsert(rows(601, 1), vectors(601, 1))  # one more odd photo: a new table version
    assert table._reach(table._dataset().version, odd) == FilterReach(301, 6)


def test_a_bad_filter_on_an_indexed_table_is_one_clear_error(table):
    from crossmodal.errors import StoreError

    table.maintain_index()
    with pytest.raises(StoreError, match="the filter cannot be applied"):
        table.nearest(vectors(10_000, 1)[0], 10, Filters(sql="no_such_column > 1"))


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
        "IVF_RQ",
        13,
        0,
    )
    assert len([c for c in table._table.list_indices() if c.columns == ["vector"]]) == 1


def test_an_index_of_an_older_default_type_is_rebuilt_as_the_policy_asks(tmp_path):
    old = Store.open(tmp_path / "db", create=True, policy=replace(POLICY, index_type="IVF_SQ"))
    table = old.images(IDENTITY, create=True)
    table.append(rows(0, 600), vectors(0, 600))
    assert table.maintain_index().vector_index == "IVF_SQ"
    assert table.maintain_index().vector_index == "IVF_SQ"  # the same policy: left alone
    table = Store.open(tmp_path / "db", policy=POLICY).images(IDENTITY)
    state = table.maintain_index()
    assert (state.vector_index, state.partitions, state.unindexed_rows) == ("IVF_RQ", 6, 0)
    assert len([c for c in table._table.list_indices() if c.columns == ["vector"]]) == 1
    query = vectors(10_000, 1)[0]
    expected, _ = exact(vectors(0, 600), query, 1)
    assert table.nearest(query, 1)[0][0].name == f"img_{expected[0]:05d}.jpg"


def test_vectors_ivf_rq_cannot_take_get_ivf_sq_once_and_keep_it(tmp_path, monkeypatch):
    from crossmodal.store import upkeep

    builds = []
    build = upkeep._build_vector_index
    monkeypatch.setattr(upkeep, "_build_vector_index", lambda *a: builds.append(a[2]) or build(*a))
    identity = ModelIdentity("narrow", "narrow", 12, "none")  # IVF_RQ needs a multiple of 8
    table = Store.open(tmp_path / "db", create=True, policy=POLICY).images(identity, create=True)
    narrow = np.random.default_rng(3).standard_normal((600, 12)).astype(np.float32)
    narrow /= np.linalg.norm(narrow, axis=1, keepdims=True)
    table.append(rows(0, 600), narrow)
    assert table.maintain_index().vector_index == "IVF_SQ"
    assert table.maintain_index().vector_index == "IVF_SQ"
    assert builds == [600]  # the second upkeep did not rebuild it
    expected, _ = exact(narrow, narrow[7], 1)
    assert table.nearest(narrow[7], 1)[0][0].name == f"img_{expected[0]:05d}.jpg"


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


def test_a_searcher_open_across_a_rebuild_in_another_process_finds_the_new_rows(table, tmp_path):
    """The table dropped and made again (`index --rebuild`) up to the very version number the
    searcher's cached dataset knows: its files are gone, and the next search opens it anew."""
    query = vectors(10_000, 1)[0]
    assert len(table.nearest(query, 1000)) == 600
    version = table._dataset().version
    other = Store.open(tmp_path / "db", policy=POLICY)
    other.drop("images")
    rebuilt = other.images(IDENTITY, create=True)
    for start in range(5000, 5000 + 10 * 40, 10):
        if rebuilt._dataset().version >= version:
            break
        rebuilt.append(rows(start, 10), vectors(start, 10))
    assert rebuilt._dataset().version == version
    found = table.nearest(query, 1000)
    assert len(found) == rebuilt.count() and all(int(r.name[4:9]) >= 5000 for r, _ in found)


def test_data_the_caller_got_wrong_is_not_reported_as_damaged_files(table):
    from crossmodal.errors import StoreError

    with pytest.raises(Exception) as info:
        table.append(rows(700, 3), vectors(700, 2))  # three rows, two vectors
    assert not isinstance(info.value, StoreError), info.value
