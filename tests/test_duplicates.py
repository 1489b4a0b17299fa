"""Near-duplicate groups, and zero-shot labelling of a whole index into a filterable column."""

import pytest
from conftest import make_image

from crossmodal.indexing import index_folder
from crossmodal.search import Searcher, SearchOptions
from crossmodal.search.classification import label_index
from crossmodal.search.duplicates import find_duplicates
from crossmodal.search.labels import add_texts
from crossmodal.store import Store
from crossmodal.store.filters import Filters


@pytest.fixture
def store(photos, tmp_path, encoder):
    store = Store.open(tmp_path / "db", create=True)
    index_folder(photos, store, encoder)
    return store


def test_groups_near_identical_photos_and_keeps_the_largest(store, photos, encoder):
    make_image(photos / "copies" / "red_big.png", "red", size=(200, 100))
    make_image(photos / "copies" / "red_small.jpg", "red", size=(20, 10))
    make_image(photos / "copies" / "green2.jpg", "green")
    index_folder(photos, store, encoder)
    groups = find_duplicates(store.images(encoder.identity), 0.95, block_rows=2)
    assert [[r.name for r in g.rows] for g in groups] == [
        ["red_big.png", "red.jpg", "red_small.jpg"],
        ["green2.jpg", "green.png"],  # same pixels: the larger file first
    ]
    assert groups[0].keep.name == "red_big.png" and groups[0].similarity == pytest.approx(1.0)


def test_no_duplicates_below_the_threshold_and_filters_narrow_the_search(store, photos, encoder):
    assert find_duplicates(store.images(encoder.identity), 0.95) == []
    make_image(photos / "trips" / "again.jpg", "yellow")
    make_image(photos / "again_blue.jpg", "blue")
    index_folder(photos, store, encoder)
    table = store.images(encoder.identity)
    only_trips = find_duplicates(table, 0.95, filters=Filters(folder="trips"))
    assert [[r.name for r in g.rows] for g in only_trips] == [["again.jpg", "yellow.jpg"]]


def test_label_the_whole_index_then_filter_and_search_by_label(store, photos, encoder):
    add_texts(store, encoder, ["red", "green", "blue", "yellow", "cyan", "black"])
    report = label_index(store, encoder)
    assert (report.labelled, report.already) == (6, 0)
    assert dict(report.counts) == {
        c: 1 for c in ["red", "green", "blue", "yellow", "cyan", "black"]
    }
    searcher = Searcher(store, encoder)
    hits = searcher.search("red", SearchOptions(k=10, filters=Filters(label="cyan")))
    assert [h.row.name for h in hits] == ["cyan.png"]
    # an unchanged index is not labelled again; a changed photo loses its label and gets a new one
    assert label_index(store, encoder).labelled == 0
    make_image(photos / "red.jpg", "blue", size=(30, 30))
    index_folder(photos, store, encoder)
    again = label_index(store, encoder)
    assert (again.labelled, again.already, dict(again.counts)) == (1, 5, {"blue": 1})
    # new labels are a new label set: everything is labelled again
    add_texts(store, encoder, ["white"])
    assert label_index(store, encoder).labelled == 6
    # keyword (hybrid) search reads the labels too
    hits = searcher.search("blue", SearchOptions(k=2, hybrid=True))
    assert {h.row.name for h in hits} == {"red.jpg", "blue.webp"}
