import os
import shutil
from pathlib import Path

import pytest
from conftest import ColourEncoder, make_image

from crossmodal.errors import ModelMismatchError
from crossmodal.indexing import IndexConfig, index_folder
from crossmodal.store import Store


def counts(report):
    return (
        report.new,
        report.updated,
        report.moved,
        report.unchanged,
        report.removed,
        len(report.failed),
    )


def stored(store, encoder):
    table = store.images(encoder.identity)
    return sorted(os.path.relpath(p, table_root(store)) for p in table.stored_files())


def table_root(store):
    return store.db_dir.parent / "photos"


def test_first_run_indexes_every_image_with_metadata(photos, tmp_path, encoder):
    store = Store.open(tmp_path / "db", create=True)
    report = index_folder(photos, store, encoder)
    assert counts(report) == (6, 0, 0, 0, 0, 0)
    assert report.encoded == 6
    rows = {r.name: r for r in store.images(encoder.identity).rows()}
    assert (rows["red.jpg"].width, rows["red.jpg"].height, rows["red.jpg"].format) == (
        48,
        32,
        "JPEG",
    )
    assert rows["cyan.png"].folder == str(photos / "trips" / "2019")
    assert rows["blue.webp"].suffix == ".webp"


def test_reindex_skips_unchanged_files(photos, tmp_path, encoder):
    store = Store.open(tmp_path / "db", create=True)
    index_folder(photos, store, encoder)
    encoder.images_encoded = 0
    report = index_folder(photos, store, encoder)
    assert counts(report) == (0, 0, 0, 6, 0, 0)
    assert encoder.images_encoded == 0


def test_reindex_handles_add_change_move_delete(photos, tmp_path, encoder):
    store = Store.open(tmp_path / "db", create=True)
    index_folder(photos, store, encoder)
    make_image(photos / "new" / "magenta.png", "magenta")  # added
    make_image(photos / "red.jpg", "white", size=(50, 30))  # changed content
    shutil.move(photos / "green.png", photos / "trips" / "green-renamed.png")  # moved
    (photos / "blue.webp").unlink()  # deleted
    os.utime(photos / "trips" / "yellow.jpg", ns=(1, 1))  # touched, same bytes
    encoder.images_encoded = 0
    report = index_folder(photos, store, encoder)
    assert counts(report) == (1, 1, 1, 3, 1, 0)
    assert encoder.images_encoded == 2  # only the new and the changed photo
    assert stored(store, encoder) == [
        "new/magenta.png",
        "red.jpg",
        "trips/2019/black.gif",
        "trips/2019/cyan.png",
        "trips/green-renamed.png",
        "trips/yellow.jpg",
    ]
    table = store.images(encoder.identity)
    assert table.get(str(photos / "red.jpg"))[0].width == 50
    moved_vector = table.get(str(photos / "trips" / "green-renamed.png"))[1]
    assert moved_vector.tolist() == encoder.encode_texts(["green"])[0].tolist()
    assert counts(index_folder(photos, store, encoder)) == (0, 0, 0, 6, 0, 0)


def test_corrupt_files_are_reported_and_the_run_goes_on(photos, tmp_path, encoder):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "empty.png").write_bytes(b"")
    store = Store.open(tmp_path / "db", create=True)
    report = index_folder(photos, store, encoder, IndexConfig(batch_size=2))
    assert counts(report) == (6, 0, 0, 0, 0, 2)
    assert [(Path(f.path).name, f.reason) for f in report.failed] == [
        ("broken.jpg", "not a recognised image format (wrong extension, or not an image at all)"),
        ("empty.png", "empty file (0 bytes)"),
    ]


def test_a_photo_that_becomes_corrupt_loses_its_stale_row(photos, tmp_path, encoder):
    store = Store.open(tmp_path / "db", create=True)
    index_folder(photos, store, encoder)
    (photos / "red.jpg").write_bytes(b"garbage now")
    report = index_folder(photos, store, encoder)
    assert counts(report) == (0, 0, 0, 5, 0, 1)
    assert store.images(encoder.identity).get(str(photos / "red.jpg")) is None


class ExplodingEncoder(ColourEncoder):
    """Fails after `limit` images, like a process killed mid-run."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def encode_images(self, images):
        if self.images_encoded + len(images) > self.limit:
            raise KeyboardInterrupt
        return super().encode_images(images)


def test_interrupted_run_resumes_without_duplicates_or_losses(photos, tmp_path):
    store = Store.open(tmp_path / "db", create=True)
    with pytest.raises(KeyboardInterrupt):
        index_folder(photos, store, ExplodingEncoder(limit=4), IndexConfig(batch_size=2))
    table = store.images(ColourEncoder().identity)
    assert table.count() == 4  # two whole batches were committed
    encoder = ColourEncoder()
    report = index_folder(photos, store, encoder, IndexConfig(batch_size=2))
    assert (report.new, report.unchanged, encoder.images_encoded) == (2, 4, 2)
    assert table.count() == 6
    assert len(set(table.stored_files())) == 6


def test_index_with_another_model_is_refused_until_rebuild(photos, tmp_path, encoder):
    store = Store.open(tmp_path / "db", create=True)
    index_folder(photos, store, encoder)
    other = ColourEncoder("other-model")
    with pytest.raises(ModelMismatchError, match="--rebuild"):
        index_folder(photos, store, other)
    report = index_folder(photos, store, other, IndexConfig(rebuild=True))
    assert report.new == 6
    assert store.info("images").model.spec == "other-model"


def test_two_folders_share_one_table_without_touching_each_other(photos, tmp_path, encoder):
    other = tmp_path / "other"
    make_image(other / "x.png", "red")
    store = Store.open(tmp_path / "db", create=True)
    index_folder(photos, store, encoder)
    report = index_folder(other, store, encoder)
    assert counts(report) == (1, 0, 0, 0, 0, 0)
    assert store.images(encoder.identity).count() == 7


def test_progress_reports_each_batch(photos, tmp_path, encoder):
    events = []
    index_folder(
        photos,
        Store.open(tmp_path / "db", create=True),
        encoder,
        IndexConfig(batch_size=4),
        on_progress=events.append,
    )
    assert [(e.done, e.total) for e in events] == [(4, 6), (6, 6)]
    assert all(e.images_per_second > 0 for e in events)


def test_a_touched_photo_without_exif_dates_by_its_new_file_time(photos, tmp_path, encoder):
    import os
    from datetime import datetime

    from crossmodal.store.filters import Filters, parse_date

    store = Store.open(tmp_path / "db", create=True)
    index_folder(photos, store, encoder)
    when = datetime(2018, 5, 1).timestamp()
    os.utime(photos / "red.jpg", (when, when))  # e.g. `touch -d` to fix a wrong date
    report = index_folder(photos, store, encoder)
    assert report.encoded == 0 and report.unchanged == 6
    old = store.images(encoder.identity).rows(Filters(before=parse_date("2019")))
    assert [row.name for row in old] == ["red.jpg"]
