"""Filters are typed and checked when made; the store compiles them to safe SQL, and LanceDB
applies them to an indexed folder."""

import os
from datetime import datetime

import pytest
from conftest import make_image

from crossmodal.errors import CrossmodalError, FilterError, StoreError
from crossmodal.indexing import index_folder
from crossmodal.store import Store
from crossmodal.store.filters import Filters, Orientation, parse_date
from crossmodal.store.where import where_clause


def test_values_are_quoted_never_pasted():
    sql = where_clause(Filters(folder="it's", label="x' OR 1=1 --"))
    assert "'%/it''s'" in sql and "label = 'x'' OR 1=1 --'" in sql


def test_dates_types_and_sizes_compile():
    sql = where_clause(
        Filters(
            after=parse_date("2019"),
            before=parse_date("2020-01"),
            types=("jpg", "JPEG", ".png"),
            min_width=3000,
            orientation="portrait",
            sql="size > 10",
        )
    )
    assert sql == (
        "(taken_at >= timestamp '2019-01-01 00:00:00.000000') AND "
        "(taken_at < timestamp '2020-01-01 00:00:00.000000') AND (width >= 3000) AND "
        "(width < height) AND (format IN ('JPEG', 'PNG')) AND (size > 10)"
    )
    assert where_clause(Filters()) is None


@pytest.mark.parametrize("bad", ["19/07/2019", "yesterday", "2019-13"])
def test_unreadable_dates_say_the_valid_forms(bad):
    with pytest.raises(CrossmodalError, match="YYYY-MM-DD"):
        parse_date(bad, option="--after")


def test_unknown_type_lists_the_known_ones():
    with pytest.raises(FilterError, match="heic, heif, jpeg, jpg"):
        Filters(types=("raw",))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Filters(orientation="diagonal"), "choose one of landscape, portrait, square"),
        (lambda: Filters(min_width=0), "min_width must be a whole number of pixels from 1"),
        (lambda: Filters(min_height=-5), "min_height must be a whole number"),
        (
            lambda: Filters(after=parse_date("2020"), before=parse_date("2019")),
            "the date range is empty",
        ),
        (lambda: Filters(sql="1=1) OR (1=1"), "unbalanced parentheses or quotes"),
        (lambda: Filters(sql="name = 'x"), "unbalanced parentheses or quotes"),
    ],
)
def test_invalid_filter_values_are_refused_when_made(make, message):
    with pytest.raises(FilterError, match=message):
        make()


def test_typed_values_are_normalised():
    filters = Filters(orientation="portrait", types=("jpg", "JPEG", ".png"), folder="  ")
    assert filters.orientation is Orientation.PORTRAIT
    assert filters.types == ("JPEG", "PNG")
    assert filters.folder is None
    assert not Filters(sql="  ").active


def test_a_raw_condition_that_mentions_label_is_not_refused_for_it(table):
    # the word "label" inside a value is not the label column
    assert names(table, Filters(sql="name LIKE '%label%'")) == []
    assert names(table, Filters(sql="name LIKE '%beach%'")) == ["a_beach.jpg"]


@pytest.fixture
def table(tmp_path, encoder):
    root = tmp_path / "photos"
    make_image(root / "Travel" / "a_beach.jpg", "yellow", size=(60, 40))
    make_image(root / "Travel" / "2019" / "b.png", "blue", size=(30, 50))
    make_image(root / "Travel_old" / "c.jpg", "red")
    make_image(root / "home" / "d.webp", "green", size=(20, 20))
    make_image(root / "it's" / "e.jpg", "white")
    stamps = {"a_beach.jpg": 2019, "b.png": 2019, "c.jpg": 2018, "d.webp": 2020, "e.jpg": 2021}
    for path in root.rglob("*.*"):
        when = datetime(stamps[path.name], 6, 1).timestamp()
        os.utime(path, (when, when))
    store = Store.open(tmp_path / "db", create=True)
    index_folder(root, store, encoder)
    table = store.images(encoder.identity)
    table.root = root
    return table


def names(table, filters):
    return sorted(r.name for r in table.rows(filters))


def test_folder_by_path_includes_subfolders_only_of_that_folder(table):
    assert names(table, Filters(folder=str(table.root / "Travel"))) == ["a_beach.jpg", "b.png"]


def test_folder_by_name_matches_at_any_depth_and_escapes_wildcards(table):
    assert names(table, Filters(folder="Travel")) == ["a_beach.jpg", "b.png"]
    assert names(table, Filters(folder="2019")) == ["b.png"]
    assert names(table, Filters(folder="Travel_old")) == ["c.jpg"]
    assert names(table, Filters(folder="Travel%")) == []
    assert names(table, Filters(folder="it's")) == ["e.jpg"]


def test_date_type_and_size_filters_on_a_table(table):
    in_2019 = Filters(after=parse_date("2019"), before=parse_date("2020"))
    assert names(table, in_2019) == ["a_beach.jpg", "b.png"]
    assert names(table, Filters(types=("jpg",))) == ["a_beach.jpg", "c.jpg", "e.jpg"]
    assert names(table, Filters(min_width=50)) == ["a_beach.jpg"]
    assert names(table, Filters(orientation="square")) == ["d.webp"]
    assert names(table, Filters(sql="size > 0", types=("webp",))) == ["d.webp"]


def test_a_bad_where_is_a_clear_error(table):
    with pytest.raises(StoreError, match="the filter cannot be applied") as info:
        table.rows(Filters(sql="colour = 'red'"))
    assert "taken_at" in str(info.value)
