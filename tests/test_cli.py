"""The CLI end to end, with the colour encoder standing in for CLIP (exact rankings)."""

import json

import pytest
from click.testing import CliRunner
from conftest import ColourEncoder, make_image

import crossmodal.cli.options as options
from crossmodal.cli import main
from crossmodal.encoder import resolve_precision


@pytest.fixture
def cli(monkeypatch):
    loaded = []

    def fake_load(spec, device, precision, batch_size):
        loaded.append(spec)
        return ColourEncoder(spec)

    monkeypatch.setattr(options, "load", fake_load)
    # each command module imported `load` by name
    import crossmodal.cli.indexing as indexing
    import crossmodal.cli.searching as searching

    monkeypatch.setattr(indexing, "load", fake_load)
    monkeypatch.setattr(searching, "load", fake_load)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    run.loaded = loaded
    return run


def test_index_prints_summary_and_failures(cli, photos, tmp_path):
    (photos / "broken.jpg").write_text("nope")
    result = cli("index", photos, "--db", tmp_path / "db", "--model", "fake-a")
    assert result.exit_code == 0
    assert "│   6 │       0 │     0 │         0 │       0 │      1 │" in result.output
    assert "broken.jpg': not a recognised image format" in result.output


def test_index_json_and_rerun_is_incremental(cli, photos, tmp_path):
    cli("index", photos, "--db", tmp_path / "db", "--model", "fake-a")
    make_image(photos / "more.png", "white")
    result = cli("index", photos, "--db", tmp_path / "db", "--json")
    report = json.loads(result.output)
    assert (report["new"], report["unchanged"], report["failed"]) == (1, 6, [])
    assert cli.loaded == ["fake-a", "fake-a"]  # the rerun used the table's own model


def test_search_by_text_and_image(cli, photos, tmp_path):
    cli("index", photos, "--db", tmp_path / "db", "--model", "fake-a")
    result = cli("search", "something green", "--db", tmp_path / "db", "-k", "2", "--json")
    hits = json.loads(result.output)
    assert [h["name"] for h in hits][0] == "green.png"
    assert hits[0]["score"] == 1.0 and hits[0]["rank"] == 1
    result = cli("search", "--image", photos / "red.jpg", "--db", tmp_path / "db", "-k", "1")
    assert str(photos / "red.jpg") in result.output and "1.000" in result.output


def test_search_needs_text_or_image(cli, photos, tmp_path):
    result = cli("search", "--db", tmp_path / "db")
    assert result.exit_code == 2 and "either a text QUERY or --image" in result.output


def test_search_with_wrong_model_prints_the_fix(cli, photos, tmp_path):
    cli("index", photos, "--db", tmp_path / "db", "--model", "fake-a")
    result = cli("search", "red", "--db", tmp_path / "db", "--model", "fake-b")
    assert result.exit_code == 1
    assert "built with model 'fake-a'" in result.output
    assert "--model fake-a" in result.output
    assert "Traceback" not in result.output


def test_search_on_missing_database_is_a_clear_error(cli, tmp_path):
    result = cli("search", "red", "--db", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "no database at" in result.output and "crossmodal index PHOTOS_DIR" in result.output


def test_labels_add_then_classify_and_captions(cli, photos, tmp_path):
    cli("index", photos, "--db", tmp_path / "db", "--model", "fake-a")
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    result = cli("labels", "add", labels, "--db", tmp_path / "db")
    assert "added 3 texts to table 'labels' (3 in all)" in result.output
    assert cli("labels", "list", "--db", tmp_path / "db").output.split() == ["red", "green", "blue"]
    result = cli("classify", photos / "green.png", "--db", tmp_path / "db", "--json")
    top = json.loads(result.output)[0]
    assert top["text"] == "green" and top["probability"] == 1.0
    result = cli(
        "classify",
        photos / "red.jpg",
        "--db",
        tmp_path / "db",
        "--labels",
        "a blue boat, a red barn",
        "--json",
    )
    assert json.loads(result.output)[0]["text"] == "a red barn"
    captions = tmp_path / "captions.txt"
    captions.write_text("a sunny yellow field\na dark black night\n")
    cli("labels", "add", captions, "--table", "captions", "--db", tmp_path / "db")
    result = cli(
        "captions", photos / "trips" / "yellow.jpg", "--db", tmp_path / "db", "-k", "1", "--json"
    )
    assert json.loads(result.output) == [{"text": "a sunny yellow field", "score": 1.0}]


def test_info_reports_model_dimension_and_counts(cli, photos, tmp_path):
    cli("index", photos, "--db", tmp_path / "db", "--model", "fake-a")
    data = json.loads(cli("info", "--db", tmp_path / "db", "--json").output)
    assert data["device"] == "cpu" and data["precision"] == resolve_precision("cpu")
    assert [(t["name"], t["rows"], t["model"], t["dim"]) for t in data["tables"]] == [
        ("images", 6, "fake-a", 9)
    ]
    text = cli("info", "--db", tmp_path / "db").output
    assert "fake-a" in text and "images" in text


def test_help_is_fast_and_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; from crossmodal.cli import main; "
        "assert 'torch' not in sys.modules and 'lancedb' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sample_writes_images_labels_and_captions_once(cli, tmp_path):
    result = cli("sample", tmp_path / "s", "-n", "6")
    assert "wrote 6 sample images" in result.output
    assert len(list((tmp_path / "s").glob("*.png"))) == 6
    labels = (tmp_path / "s" / "labels.txt").read_text().splitlines()
    assert "a red circle" in labels and len(labels) == len(set(labels))
    assert len((tmp_path / "s" / "captions.txt").read_text().splitlines()) == 6
    again = cli("sample", tmp_path / "s")
    assert "already holds a sample" in again.output
    assert len(list((tmp_path / "s").glob("*.png"))) == 6


def test_damaged_database_is_reported_then_rebuilt_with_its_own_model(cli, photos, tmp_path):
    cli("index", photos, "--db", tmp_path / "db", "--model", "fake-a")
    for data_file in (tmp_path / "db" / "images.lance" / "data").iterdir():
        data_file.unlink()
    result = cli("search", "red", "--db", tmp_path / "db")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "could not be read or written" in result.output and "--rebuild" in result.output
    result = cli("index", photos, "--db", tmp_path / "db", "--rebuild", "--json")
    assert json.loads(result.output)["new"] == 6
    assert cli.loaded[-1] == "fake-a"
    hits = json.loads(cli("search", "red", "--db", tmp_path / "db", "--json").output)
    assert hits[0]["name"] == "red.jpg"
