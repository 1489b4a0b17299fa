"""The demo's logic without a browser: searches, labels, status and errors, as the page asks them."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import crossmodal_demo.service as service_module
import numpy as np
import pytest
from conftest import ColourEncoder, make_image
from crossmodal_demo.service import (
    TYPED,
    DemoService,
    compose,
    index_summary,
    label_chart,
    parse_labels,
    search_options,
)
from PIL import Image

from crossmodal.errors import CrossmodalError
from crossmodal.indexing import index_folder
from crossmodal.search import Searcher
from crossmodal.search.labels import add_texts
from crossmodal.store import Store
from crossmodal.store.where import where_clause


@pytest.fixture
def service(photos, tmp_path, encoder):
    index_folder(photos, Store.open(tmp_path / "db", create=True), encoder)
    return DemoService(tmp_path / "db", encoder, tmp_path / "work")


def names(results):
    return [item.hit.row.name for item in results.items]


def test_text_search_puts_the_matching_photo_first_with_a_caption(service):
    results = service.search_text("a red kite", search_options(k=3))
    assert names(results)[0] == "red.jpg"
    assert results.items[0].caption == "1.000 · red.jpg"
    assert results.summary.startswith('3 photos for `"a red kite"` · ')


def test_gallery_shows_small_copies_in_the_work_folder_never_the_originals(service, tmp_path):
    results = service.search_text("red", search_options(k=6))
    for item in results.items:
        thumbnail = Path(item.thumbnail)
        assert thumbnail.parent == tmp_path / "work" / "thumbnails"
        assert thumbnail != Path(item.hit.path)
        with Image.open(thumbnail) as picture:
            assert picture.format == "JPEG" and max(picture.size) <= 400


def test_thumbnails_are_made_once_and_reused(service, tmp_path):
    service.search_text("red", search_options(k=6))
    made = {p: p.stat().st_mtime_ns for p in (tmp_path / "work" / "thumbnails").iterdir()}
    service.search_text("blue", search_options(k=6))
    again = {p: p.stat().st_mtime_ns for p in (tmp_path / "work" / "thumbnails").iterdir()}
    assert made == again and len(made) == 6


def test_a_photo_deleted_since_indexing_shows_a_placeholder_and_its_reason(service, photos):
    (photos / "red.jpg").unlink()
    item = service.search_text("red", search_options(k=1)).items[0]
    assert item.caption == "1.000 · red.jpg (unreadable)"
    assert item.problem is not None and "cannot read file" in item.problem
    assert Path(item.thumbnail).name == "missing-400.png"
    details = service.details(item)
    assert details.preview is None
    assert ("problem", f"cannot show the photo: {item.problem}") in details.fields


def test_composed_terms_add_and_subtract(service, encoder):
    both = service.search_text("red", search_options(k=2), [("blue", 1.0)])
    assert sorted(names(both)) == ["blue.webp", "red.jpg"]
    assert both.items[0].hit.score == pytest.approx(np.sqrt(0.5))
    assert '`"red" + "blue"`' in both.summary
    minus = service.search_text("red", search_options(k=6), [("blue", -0.5), ("", 1.0)])
    assert names(minus)[0] == "red.jpg" and names(minus)[-1] == "blue.webp"
    assert '`"red" - 0.5*"blue"`' in minus.summary


def test_the_query_box_reads_the_clis_composition_syntax(service):
    typed = service.search_text('"red" - 0.5*"blue"', search_options(k=6))
    assert names(typed) == names(service.search_text("red", search_options(k=6), [("blue", -0.5)]))
    assert typed.summary.startswith('6 photos for `"red" - 0.5*"blue"`')


def test_the_query_box_reads_no_files(service, photos):
    with pytest.raises(CrossmodalError, match="@photo terms are not read from this box"):
        service.search_text(f'@{photos / "red.jpg"} + "blue"', search_options())


def test_composition_is_the_normalised_weighted_sum(service, encoder):
    query = compose("red", [("green", -0.5), ("  ", 5.0), ("blue", 0.0)])
    vector = Searcher(service.searcher().store, encoder).query_vector(query)
    expected = np.zeros(encoder.dim, np.float32)
    expected[[0, 1]] = [1.0, -0.5]
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), rtol=1e-6)


@pytest.mark.parametrize(
    ("query", "extra", "message"),
    [
        ("   ", [], "the query is empty"),
        ("", [("red", 0.0)], "the query is empty"),
        ("red", [("red", -1.0)], "cancels itself out"),
    ],
)
def test_empty_or_cancelling_queries_are_refused(service, query, extra, message):
    with pytest.raises(CrossmodalError, match=message):
        service.search_text(query, search_options(), extra)


def test_folder_filter_takes_subfolders_but_not_a_sibling_with_the_same_prefix(
    photos, tmp_path, encoder
):
    make_image(photos / "trips2" / "red-too.jpg", "red")
    index_folder(photos, Store.open(tmp_path / "db", create=True), encoder)
    service = DemoService(tmp_path / "db", encoder, tmp_path / "work")
    results = service.search_text("black", search_options(k=10, folder=str(photos / "trips")))
    assert sorted(names(results)) == ["black.gif", "cyan.png", "yellow.jpg"]


def test_folder_by_name_matches_at_any_depth(service):
    results = service.search_text("black", search_options(k=10, folder="2019"))
    assert sorted(names(results)) == ["black.gif", "cyan.png"]


def test_filters_quote_values_and_make_dates_inclusive():
    options = search_options(folder="/p/it's/", taken_from="2019-06-01", taken_until="2019-08-31")
    assert where_clause(options.filters) == (
        "(folder = '/p/it''s' OR starts_with(folder, '/p/it''s/')) AND "
        "(taken_at >= timestamp '2019-06-01 00:00:00.000000') AND "
        "(taken_at < timestamp '2019-09-01 00:00:00.000000')"
    )
    assert where_clause(search_options().filters) is None


def test_date_filter_selects_by_taken_at(service):
    assert service.search_text("red", search_options(k=10, taken_until="2000-01-01")).items == ()
    assert len(service.search_text("red", search_options(k=10, taken_from="2000")).items) == 6


@pytest.mark.parametrize(
    ("text", "start", "after_end"),
    [
        ("", None, None),
        (" 2019-06-30 ", datetime(2019, 6, 30), datetime(2019, 7, 1)),
        ("2019-06", datetime(2019, 6, 1), datetime(2019, 7, 1)),
        ("2019-12", datetime(2019, 12, 1), datetime(2020, 1, 1)),
        ("2019", datetime(2019, 1, 1), datetime(2020, 1, 1)),
    ],
)
def test_dates_typed_by_a_person_from_the_start_until_the_end(text, start, after_end):
    filters = search_options(taken_from=text, taken_until=text).filters
    assert (filters.after, filters.before) == (start, after_end)


def test_a_date_that_is_not_one_says_how_to_write_it():
    with pytest.raises(CrossmodalError, match="cannot read 'from' date '31/12/2019'; write YYYY"):
        search_options(taken_from="31/12/2019")


def test_pages_follow_each_other_without_overlap(service):
    every = service.search_text("red", search_options(k=6)).items
    pages = [service.search_text("red", search_options(k=2, page=p)) for p in (1, 2, 3)]
    assert [item for page in pages for item in page.items] == list(every)
    assert search_options(k=500, page=None).k == 200  # a cleared page box is page 1
    red = every[0].hit.path
    like = names(service.more_like(red, search_options(k=5)))
    like_pages = [names(service.more_like(red, search_options(k=2, page=p))) for p in (1, 2)]
    assert like_pages[0] + like_pages[1] == like[:4] and "red.jpg" not in like


def test_minimum_score_drops_weak_hits_and_says_so(service):
    results = service.search_text("red", search_options(k=4, min_score=0.5))
    assert names(results) == ["red.jpg"]
    none = service.search_text("a pink elephant", search_options(k=4, min_score=0.5))
    assert none.items == ()
    assert none.summary.startswith(
        'No photo for `"a pink elephant"`: no photo scores 0.50 or more on this page'
    )


def test_image_search_finds_the_uploaded_colour(service, tmp_path):
    upload = make_image(tmp_path / "upload" / "query.png", "cyan", size=(20, 20))
    results = service.search_image(str(upload), search_options(k=2))
    assert names(results)[0] == "cyan.png"
    assert results.summary.startswith("2 photos for photos like query.png")


def test_uploading_a_non_image_is_a_readable_error(service, tmp_path):
    upload = tmp_path / "notes.jpg"
    upload.write_text("shopping list")
    with pytest.raises(CrossmodalError) as error:
        service.search_image(str(upload), search_options())
    assert str(error.value) == (
        "notes.jpg is not a photo crossmodal can read: not a recognised image format "
        "(wrong extension, or not an image at all). Drop a JPEG, PNG, WebP, GIF, TIFF or BMP file."
    )


def test_missing_and_oversized_uploads_are_refused(service, tmp_path, monkeypatch):
    with pytest.raises(CrossmodalError, match="drop or paste a photo first"):
        service.search_image(None, search_options())
    upload = make_image(tmp_path / "big.png", "red", size=(400, 400))
    monkeypatch.setattr(service_module, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(CrossmodalError, match=r"big.png is 0 MB; photos up to 0 MB"):
        service.search_image(str(upload), search_options())


def test_more_like_this_leaves_the_photo_out_and_keeps_the_count(service, photos):
    results = service.more_like(str(photos / "red.jpg"), search_options(k=3))
    assert len(results.items) == 3 and "red.jpg" not in names(results)
    assert results.summary.startswith("3 photos for photos like red.jpg")


def test_more_like_this_only_for_photos_of_the_index(service, tmp_path):
    outside = make_image(tmp_path / "elsewhere" / "red.jpg", "red")
    for path in (str(outside), "/etc/passwd", str(tmp_path / "photos" / ".." / "photos/red.jpg")):
        with pytest.raises(CrossmodalError, match="is not in the index"):
            service.more_like(path, search_options())


def test_details_show_name_folder_size_date_and_a_large_copy(service, photos):
    item = service.search_text("green", search_options(k=1)).items[0]
    details = service.details(item)
    assert details.path == str(photos / "green.png")
    assert details.fields[:4] == (
        ("file", "green.png"),
        ("folder", str(photos)),
        ("score", "1.000"),
        ("size", f"48 × 32 px · {(photos / 'green.png').stat().st_size / 1e3:.0f} kB · PNG"),
    )
    assert details.fields[4][1].endswith("(file date)")
    assert Path(details.preview).name.endswith("-1280.jpg")
    assert details.markdown().startswith("**green\\.png**  \nfolder: ")


def test_labels_typed_on_the_spot(service, photos):
    hits = service.labels(
        str(photos / "trips" / "yellow.jpg"), TYPED, "a red car,\na yellow field, red"
    )
    assert [h.text for h in hits] == ["a yellow field", "a red car", "red"]
    chart = label_chart(hits)
    assert list(chart) == ["a yellow field", "a red car", "red"]
    assert chart["a yellow field"] == pytest.approx(1.0)


def test_labels_from_a_table(service, photos, tmp_path, encoder):
    add_texts(Store.open(tmp_path / "db"), encoder, ["green", "blue", "black"], table="colours")
    assert service.text_sources() == [TYPED, "colours"]
    hits = service.labels(str(photos / "blue.webp"), "colours", "")
    assert hits[0].text == "blue" and hits[0].probability == pytest.approx(1.0)


def test_labels_need_candidates(service, photos):
    with pytest.raises(CrossmodalError, match="type a few labels"):
        service.labels(str(photos / "red.jpg"), TYPED, " , \n")
    assert parse_labels("a, b\nc,, a") == ["a", "b", "c"]


def test_status_reports_model_device_and_counts(service, tmp_path, encoder):
    add_texts(Store.open(tmp_path / "db"), encoder, ["red", "blue"])
    status = service.status()
    assert (status.model, status.device, status.precision) == ("fake-colours", "cpu", "fp32")
    assert (status.images, status.texts, status.problem) == (6, (("labels", 2),), None)
    assert "on **CPU** (fp32)" in status.markdown()
    assert "6 photos · text tables: labels (2)" in status.markdown()


def test_status_of_a_missing_index_says_how_to_build_it(tmp_path, encoder):
    service = DemoService(tmp_path / "nowhere", encoder, tmp_path / "work")
    status = service.status()
    assert status.images == 0
    assert "no database at" in status.problem and "crossmodal index PHOTOS_DIR" in status.problem
    assert "Traceback" not in status.markdown()
    with pytest.raises(CrossmodalError, match="no database at"):
        service.search_text("red", search_options())
    assert service.folders() == [] and service.text_sources() == [TYPED]


def test_status_and_search_of_an_empty_index(tmp_path, encoder):
    Store.open(tmp_path / "db", create=True).images(encoder.identity, create=True)
    service = DemoService(tmp_path / "db", encoder, tmp_path / "work")
    assert "holds no photos yet" in service.status().problem
    results = service.search_text("red", search_options())
    assert results.items == ()
    assert results.summary.startswith('No photo for `"red"`: the index in')


def test_status_when_the_model_does_not_match_the_table(service, tmp_path):
    other = DemoService(tmp_path / "db", ColourEncoder("another"), tmp_path / "work")
    problem = other.status().problem
    assert "built with model 'fake-colours'" in problem and "--model fake-colours" in problem
    with pytest.raises(CrossmodalError, match="built with model 'fake-colours'"):
        other.search_text("red", search_options())


def test_folder_choices_are_relative_to_the_common_root(service, photos):
    assert service.folders() == [
        ("photos (all)", str(photos)),
        ("photos/trips", str(photos / "trips")),
        ("photos/trips/2019", str(photos / "trips" / "2019")),
    ]


def test_index_a_folder_from_the_page(tmp_path, photos, encoder):
    (photos / "broken.jpg").write_text("nope")
    service = DemoService(tmp_path / "db", encoder, tmp_path / "work")
    seen = []
    report = service.index(str(photos), seen.append)
    assert (report.new, len(report.failed)) == (6, 1) and seen[-1].done == 7
    summary = index_summary(report)
    assert summary.startswith(f"Indexed `{photos}`: 6 new, 0 updated")
    assert "broken.jpg`: not a recognised image format" in summary
    assert service.status().images == 6
    with pytest.raises(CrossmodalError, match="is not a folder"):
        service.index(str(photos / "red.jpg"))


def test_the_service_imports_neither_gradio_nor_torch():
    code = (
        "import sys, crossmodal_demo.service, crossmodal_demo.thumbnails; "
        "assert 'gradio' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_package_is_installed():
    """pyproject lists packages by hand (to install demo/ as crossmodal_demo): none forgotten."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "crossmodal").rglob("__init__.py")
    }
    assert on_disk | {"crossmodal_demo"} == set(config["packages"])
    assert config["package-dir"] == {"crossmodal_demo": "demo"}


class FakeApp:
    """Stands in for demo/app.py: records how the command launches it."""

    DemoService = DemoService

    def __init__(self) -> None:
        self.launches: list[tuple[DemoService, dict[str, object]]] = []

    def launch(self, service: DemoService, **options: object) -> None:
        self.launches.append((service, options))


@pytest.fixture
def demo_cli(monkeypatch):
    from click.testing import CliRunner

    import crossmodal.cli.demo as demo_command
    from crossmodal.cli import main

    app, loaded = FakeApp(), []

    def fake_load(spec, device, precision, batch_size):
        loaded.append((spec, device, precision))
        return ColourEncoder(spec)

    monkeypatch.setattr(demo_command, "load_query_encoder", fake_load)
    monkeypatch.setattr(demo_command, "app_module", lambda: app)

    def run(*args):
        result = CliRunner().invoke(main, ["demo", *map(str, args)], catch_exceptions=False)
        return result, app.launches, loaded

    return run


def test_demo_command_loads_the_tables_model_once_and_stays_on_this_machine(
    demo_cli, photos, tmp_path, encoder
):
    index_folder(photos, Store.open(tmp_path / "db", create=True), encoder)
    result, launches, loaded = demo_cli("--db", tmp_path / "db")
    assert result.exit_code == 0, result.output
    assert loaded == [("fake-colours", "auto", "auto")]
    ((service, options),) = launches
    assert options == {
        "host": "127.0.0.1",
        "port": None,
        "share": False,
        "allow_indexing": True,
        "open_browser": False,
        "on_ready": options["on_ready"],
        "extra_hosts": (),
    }
    assert service.encoder.identity.spec == "fake-colours"
    assert not service.workdir.exists()  # the private folder is removed when the demo stops


def test_demo_command_offers_indexing_only_to_this_machine(demo_cli, tmp_path):
    _, launches, _ = demo_cli("--db", tmp_path / "db", "--host", "0.0.0.0", "--port", 7000)
    assert launches[0][1]["allow_indexing"] is False and launches[0][1]["port"] == 7000
    _, launches, _ = demo_cli("--db", tmp_path / "db", "--share")
    assert launches[1][1]["allow_indexing"] is False and launches[1][1]["share"] is True
    _, launches, loaded = demo_cli(
        "--db", tmp_path / "db", "--model", "fake-x", "--allow-indexing", "--share"
    )
    assert launches[2][1]["allow_indexing"] is True and loaded[-1][0] == "fake-x"


def test_the_app_module_is_found_in_a_source_checkout():
    from crossmodal.cli.demo import app_module, is_loopback

    assert app_module().__name__ in ("crossmodal_demo.app", "demo.app")
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "my.host")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_the_reused_searcher_sees_new_rows_and_a_rebuilt_table(service, photos, tmp_path):
    from crossmodal.indexing import IndexConfig

    first = service.searcher()
    assert service.searcher() is first  # opened once while the tables stay the same
    make_image(photos / "more" / "magenta.png", "magenta")
    index_folder(photos, Store.open(tmp_path / "db"), ColourEncoder())
    assert names(service.search_text("magenta", search_options(k=1))) == ["magenta.png"]
    # the table dropped and made again by another model: refused, not searched with stale state
    index_folder(
        photos, Store.open(tmp_path / "db"), ColourEncoder("another"), IndexConfig(rebuild=True)
    )
    with pytest.raises(CrossmodalError, match="built with model 'another'"):
        service.search_text("red", search_options())


def test_a_page_number_beyond_any_index_is_one_clear_error():
    with pytest.raises(CrossmodalError, match="offset must be from 0 to"):
        search_options(k=24, page=2**40)


def test_a_decompression_bomb_upload_is_refused_with_its_reason(service, tmp_path):
    from test_reliability import _png_header_only

    _png_header_only(tmp_path / "bomb.png", 40_000, 40_000)
    with pytest.raises(CrossmodalError, match="too large to decode safely"):
        service.search_image(tmp_path / "bomb.png", search_options())
    with pytest.raises(CrossmodalError, match="too large to decode safely"):
        service.labels(tmp_path / "bomb.png", TYPED, "red, blue")
