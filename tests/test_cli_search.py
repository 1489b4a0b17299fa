"""The CLI's search flags and the optimize, duplicates and classify --all commands."""
# ruff: noqa: F811  (pytest fixtures imported from another test module are parameters here)

import json

from conftest import make_image
from test_cli import cli  # noqa: F401  (the CLI runner fixture with the colour encoder)


def index(cli, photos, tmp_path):
    result = cli("index", photos, "--db", tmp_path / "db", "--model", "fake-a")
    assert result.exit_code == 0, result.output


def names(result):
    assert result.exit_code == 0, result.output
    return [h["name"] for h in json.loads(result.output)]


def test_composed_query_filters_threshold_and_paging(cli, photos, tmp_path):
    index(cli, photos, tmp_path)
    db = ("--db", tmp_path / "db", "--json")
    assert names(cli("search", '"red" - "blue"', "-k", "1", *db)) == ["red.jpg"]
    assert names(cli("search", '"cyan" + 0.5*"black"', "--folder", "trips", "-k", "2", *db)) == [
        "cyan.png",
        "black.gif",
    ]
    assert names(cli("search", "red", "--min-score", "0.5", *db)) == ["red.jpg"]
    assert names(cli("search", "green", "--type", "png,gif", "-k", "1", *db)) == ["green.png"]
    page = json.loads(cli("search", '"red" + 0.5*"blue"', "-k", "1", "--offset", "1", *db).output)
    assert (page[0]["rank"], page[0]["name"]) == (2, "blue.webp")
    both = cli("search", "at night", "--image", photos / "red.jpg", "-k", "1", *db)
    assert names(both) == ["red.jpg"]


def test_date_and_where_errors_are_readable(cli, photos, tmp_path):
    index(cli, photos, tmp_path)
    result = cli("search", "red", "--db", tmp_path / "db", "--after", "last week")
    assert result.exit_code == 1 and "cannot read --after 'last week'" in result.output
    result = cli("search", "red", "--db", tmp_path / "db", "--where", "colour = 1")
    assert result.exit_code == 1 and "the filter cannot be applied" in result.output
    result = cli("search", '"red" + blue', "--db", tmp_path / "db")
    assert result.exit_code == 1 and "cannot read query at character 9" in result.output


def test_classify_all_then_search_by_label_and_hybrid(cli, photos, tmp_path):
    index(cli, photos, tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\nyellow\ncyan\nblack\n")
    cli("labels", "add", labels, "--db", tmp_path / "db")
    result = cli("classify", "--all", "--db", tmp_path / "db", "--json")
    report = json.loads(result.output)
    assert (report["labelled"], report["counts"]["cyan"]) == (6, 1)
    db = ("--db", tmp_path / "db", "--json")
    assert names(cli("search", "red", "--label", "black", *db)) == ["black.gif"]
    assert names(cli("search", "black", "--hybrid", "-k", "1", *db)) == ["black.gif"]
    result = cli("classify", "--db", tmp_path / "db")
    assert result.exit_code == 2 and "or --all" in result.output


def test_duplicates_and_optimize(cli, photos, tmp_path):
    make_image(photos / "copy" / "red_big.png", "red", size=(96, 64))
    index(cli, photos, tmp_path)
    groups = json.loads(cli("duplicates", "--db", tmp_path / "db", "--json").output)
    assert [[p["name"] for p in g["photos"]] for g in groups] == [["red_big.png", "red.jpg"]]
    text = cli("duplicates", "--db", tmp_path / "db").output
    assert "group 1: 2 photos" in text and "keep  96x64" in text
    state = json.loads(cli("optimize", "--db", tmp_path / "db", "--json").output)["images"]
    assert (state["rows"], state["vector_index"]) == (7, None)
    result = cli("optimize", "--build", "--db", tmp_path / "db")
    assert result.exit_code == 1 and "at least 256" in result.output
