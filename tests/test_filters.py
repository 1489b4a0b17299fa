"""Filters compile to safe SQL, and LanceDB applies them to an indexed folder."""

import os
from datetime import datetime

import pytest
from conftest import make_image

from crossmodal.errors import CrossmodalError, StoreError
from crossmodal.filters import Filters, parse_date
from crossmodal.indexing import index_folder
from crossmodal.store import Store


def test_values_are_quoted_never_pasted():
    sql = Filters(folder="it's", label="x' OR 1=1 --").to_sql()
    assert "'%/it''s'" in sql and "label = 'x'' OR 1=1 --'" in sql


def test_dates_types_and_sizes_compile():
    sql = Filters(
        after=parse_date("2019"),
        before=parse_date("2020-01"),
        types=("jpg", "JPEG", ".png"),
        min_width=3000,
        orientation="portrait",
        where="size > 10",
    ).to_sql()
    assert sql == (
        "(taken_at >= timestamp '2019-01-01 00:00:00.000000') AND "
        "(taken_at < timestamp '2020-01-01 00:00:00.000000') AND (width >= 3000) AND "
        "(width < height) AND (format IN ('JPEG', 'PNG')) AND (size > 10)"
    )
    assert Filters().to_sql() is None


@pytest.mark.parametrize("bad", ["19/07/2019", "yesterday", "2019-13"])
def test_unreadable_dates_say_the_valid_forms(bad):
    with pytest.raises(CrossmodalError, match="YYYY-MM-DD"):
        parse_date(bad, option="--after")


def test_unknown_type_lists_the_known_ones():
    with pytest.raises(CrossmodalError, match="heic, heif, jpeg, jpg"):
        Filters(types=("raw",)).to_sql()


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
    return sorted(r.name for r in table.rows(filters.to_sql()))


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
    assert names(table, Filters(where="size > 0", types=("webp",))) == ["d.webp"]


def test_a_bad_where_is_a_clear_error(table):
    with pytest.raises(StoreError, match="the filter cannot be applied") as info:
        table.rows("colour = 'red'")
    assert "taken_at" in str(info.value)
