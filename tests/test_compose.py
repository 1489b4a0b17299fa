"""Composed queries, thresholds, paging, filters and hybrid keyword search through `Searcher`."""
# ruff: noqa: F811  (pytest fixtures imported from another test module are parameters here)

import pytest
from conftest import make_image
from test_search import names, searcher  # noqa: F401  (the indexed-photos fixture)

from crossmodal.errors import CrossmodalError
from crossmodal.search import SearchOptions
from crossmodal.search.query import Query
from crossmodal.store.filters import Filters


def test_weighted_sum_of_texts(searcher):
    hits = searcher.search('"red" + "blue"', SearchOptions(k=3))
    assert sorted(names(hits[:2])) == ["blue.webp", "red.jpg"]
    assert [h.score for h in hits[:2]] == pytest.approx([2**-0.5, 2**-0.5])
    hits = searcher.search('"red" + 0.5*"blue"', SearchOptions(k=2))
    assert names(hits) == ["red.jpg", "blue.webp"]
    assert [h.score for h in hits] == pytest.approx([1 / 1.25**0.5, 0.5 / 1.25**0.5])


def test_negative_terms_push_results_away(searcher):
    hits = searcher.search('"red" - "blue"', SearchOptions(k=6))
    assert names(hits)[0] == "red.jpg" and names(hits)[-1] == "blue.webp"
    assert hits[-1].score == pytest.approx(-(2**-0.5))


def test_image_plus_text_uses_the_stored_vector_of_an_indexed_photo(searcher, photos, encoder):
    query = Query.image(photos / "green.png") + Query.text("yellow")
    hits = searcher.search(query, SearchOptions(k=2))
    assert sorted(names(hits)) == ["green.png", "yellow.jpg"]
    assert encoder.images_encoded == 6  # indexing only: the query photo was not decoded again


def test_image_not_in_the_index_is_encoded(searcher, tmp_path, encoder):
    outside = make_image(tmp_path / "elsewhere" / "c.png", "cyan")
    hits = searcher.search(f"@{outside} - 0.2*'black'", SearchOptions(k=1))
    assert names(hits) == ["cyan.png"] and encoder.images_encoded == 7


def test_a_query_that_cancels_out_is_refused(searcher):
    with pytest.raises(CrossmodalError, match="cancels itself out"):
        searcher.search('"red" - "red"')


def test_min_score_and_paging(searcher):
    assert names(searcher.search("red", SearchOptions(k=10, min_score=0.5))) == ["red.jpg"]
    everything = searcher.search('"red" + 0.5*"blue"', SearchOptions(k=6))
    page = searcher.search('"red" + 0.5*"blue"', SearchOptions(k=2, offset=2))
    assert names(page) == names(everything[2:4])


def test_filters_apply_to_vector_search(searcher, photos):
    hits = searcher.search("cyan", SearchOptions(k=10, filters=Filters(folder="trips")))
    assert sorted(names(hits)) == ["black.gif", "cyan.png", "yellow.jpg"]
    hits = searcher.search("cyan", SearchOptions(k=10, filters=Filters(types=("png",))))
    assert sorted(names(hits)) == ["cyan.png", "green.png"]


def test_hybrid_search_brings_keyword_matches_up(searcher, photos, encoder, tmp_path):
    # "trips" names no colour: the vector ranks only red.jpg; the keyword finds the folder
    plain = searcher.search("red trips", SearchOptions(k=6))
    hybrid = searcher.search("red trips", SearchOptions(k=6, hybrid=True))
    assert names(plain)[0] == "red.jpg"
    assert names(hybrid)[0] == "red.jpg"
    in_trips = {"yellow.jpg", "cyan.png", "black.gif"}
    assert set(names(hybrid)[1:4]) == in_trips
    assert not set(names(plain)[1:4]) >= in_trips
    red = next(h for h in hybrid if h.row.name == "red.jpg")
    assert red.score == pytest.approx(1.0)  # the true cosine, not the fusion score
    assert {h.score for h in hybrid[1:4]} == {0.0}


def test_label_filter_before_labelling_says_how_to_label(searcher):
    with pytest.raises(CrossmodalError, match="classify --all"):
        searcher.search("red", SearchOptions(filters=Filters(label="red")))
