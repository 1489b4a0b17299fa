"""The CLI end to end, with the colour encoder standing in for CLIP (exact rankings)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ColourEncoder, make_image

import crossmodal.cli.options as options
from crossmodal.cli import main
from crossmodal.model.encoder import resolve_precision


@pytest.fixture
def cli(monkeypatch):
    loaded = []

    def fake_load(spec, device, precision, batch_size):
        loaded.append(spec)
        return ColourEncoder(spec)

    monkeypatch.setattr(options, "load", fake_load)  # what the commands' loaders call
    import crossmodal.cli.indexing as indexing  # and `index` by name, for --engine ray

    monkeypatch.setattr(indexing, "load", fake_load)
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


def test_help_lists_every_command_without_importing_torch_or_lancedb():
    import subprocess
    import sys

    code = (
        "import sys; from crossmodal.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
        "heavy = sorted({'torch', 'open_clip', 'lancedb', 'gradio'} & set(sys.modules))\n"
        "print('heavy:', heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "heavy: []"
    for command in ("index", "search", "classify", "captions", "labels", "demo", "sample"):
        assert f"  {command} " in done.stdout


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


def test_every_command_takes_json():
    for name, command in main.commands.items():
        subcommands = getattr(command, "commands", {name: command})
        for sub in subcommands.values():
            flags = {opt for param in sub.params for opt in getattr(param, "opts", [])}
            assert "--json" in flags, f"crossmodal {name} {sub.name}"


def test_labels_add_list_and_sample_print_json(cli, photos, tmp_path):
    cli("index", photos, "--db", tmp_path / "db", "--model", "fake-a")
    (tmp_path / "labels.txt").write_text("red\nblue\n")
    added = json.loads(
        cli("labels", "add", tmp_path / "labels.txt", "--db", tmp_path / "db", "--json").output
    )
    assert added == {"table": "labels", "added": 2, "rows": 2}
    listed = json.loads(cli("labels", "list", "--db", tmp_path / "db", "--json").output)
    assert listed == ["red", "blue"]
    sample = json.loads(cli("sample", tmp_path / "s", "-n", "3", "--json").output)
    assert sample["written"] == 3 and sample["labels"].endswith("labels.txt")


def test_an_empty_search_says_which_filter_matched_nothing(cli, photos, tmp_path):
    cli("index", photos, "--db", tmp_path / "db", "--model", "fake-a")
    result = cli("search", "red", "--db", tmp_path / "db", "--folder", "Holidays")
    assert result.exit_code == 0
    assert result.output.startswith("no results: no indexed photo is in a folder 'Holidays'")


def test_error_messages_reach_the_terminal_as_written(cli, tmp_path, monkeypatch):
    from crossmodal.errors import CrossmodalError

    def refuse(*args, **kwargs):
        raise CrossmodalError("the demo needs Gradio.\nFix: pip install 'crossmodal[demo]'")

    import crossmodal.cli.demo as demo_command

    monkeypatch.setattr(demo_command, "app_module", refuse)
    result = CliRunner().invoke(main, ["demo", "--db", str(tmp_path / "db")])
    assert result.exit_code == 1
    assert "pip install 'crossmodal[demo]'" in result.output


@pytest.mark.parametrize("value", ["0", "-1"])
def test_bad_batch_sizes_are_refused_before_anything_changes(cli, photos, tmp_path, value):
    result = CliRunner().invoke(
        main, ["index", str(photos), "--db", str(tmp_path / "db"), "--batch-size", value]
    )
    assert result.exit_code == 2 and "--batch-size" in result.output
    assert not (tmp_path / "db").exists()


def test_hybrid_search_prints_no_library_warnings(photos, tmp_path):
    import subprocess
    import sys

    tests, db = str(Path(__file__).parent), str(tmp_path / "db")
    code = (
        f"import sys; sys.path.insert(0, {tests!r})\n"
        "from conftest import ColourEncoder\n"
        "from crossmodal import Store, index_folder, Searcher, SearchOptions\n"
        f"store = Store.open({db!r}, create=True)\n"
        f"index_folder({str(photos)!r}, store, ColourEncoder())\n"
        "print(len(Searcher(store, ColourEncoder()).search('red', SearchOptions(hybrid=True))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"
    assert done.stderr == ""
