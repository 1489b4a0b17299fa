"""Photos and databases on object storage, against a real S3-compatible server on loopback
(moto's), not a mock of the client: index, re-index, search, the CLI, a demo thumbnail, and two
writers at once on a database that has no file lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from crossmodal.errors import CrossmodalError, StoreError
from crossmodal.evaluate.synthetic import write_sample
from crossmodal.indexing import index_folder
from crossmodal.media.remote import ObjectStorage, parse_storage_options
from crossmodal.model.encoder import EncoderConfig, load_encoder
from crossmodal.search import Searcher, SearchOptions
from crossmodal.store import Store


@pytest.fixture(scope="module")
def model():
    return load_encoder("shapes-tiny", EncoderConfig(device="cpu", precision="fp32"))


def upload(folder: Path, storage: ObjectStorage, prefix: str) -> list[str]:
    uris = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            uri = f"{prefix}/{path.relative_to(folder).as_posix()}"
            storage.write(uri, path.read_bytes())
            uris.append(uri)
    return uris


@pytest.fixture
def bucket_photos(s3, tmp_path) -> str:
    """Twelve sample shapes and a corrupt JPEG under a fresh prefix of the bucket."""
    local = tmp_path / "photos"
    write_sample(local, 12, 3)
    (local / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (local / "labels.txt").unlink()
    (local / "captions.txt").unlink()
    prefix = f"s3://photos/{uuid.uuid4().hex[:8]}/pics"
    upload(local, ObjectStorage(s3.options), prefix)
    return prefix


def fresh_db() -> str:
    return f"s3://photos/{uuid.uuid4().hex[:8]}/photos.db"


def test_index_reindex_and_search_on_object_storage(s3, bucket_photos, model, tmp_path):
    store = Store.open(fresh_db(), create=True, storage_options=s3.options)
    report = index_folder(bucket_photos, store, model)
    assert (report.new, report.encoded) == (12, 12)
    assert [f.path for f in report.failed] == [f"{bucket_photos}/broken.jpg"]
    again = index_folder(bucket_photos, store, model)
    assert (again.new, again.updated, again.encoded, again.unchanged) == (0, 0, 0, 12)
    storage = ObjectStorage(s3.options)
    first = storage.list_files(bucket_photos)[0][0]
    storage.remove(first)
    after = index_folder(bucket_photos, store, model)
    assert after.removed == 1
    hits = Searcher(store, model).search("a red circle", SearchOptions(k=20))
    assert len(hits) == 11 and all(h.path.startswith(bucket_photos + "/") for h in hits)
    assert first not in {h.path for h in hits}
    # the same table as a local index of the same photos, row for row
    local = tmp_path / "photos"
    local_store = Store.open(tmp_path / "local.db", create=True)
    index_folder(local, local_store, model)
    remote = {r.name: r for r in store.images(model.identity).rows()}
    here = {r.name: r for r in local_store.images(model.identity).rows()}
    assert set(remote) == set(here) - {Path(first).name}
    for name, row in remote.items():
        assert (row.width, row.height, row.content_hash) == (
            here[name].width, here[name].height, here[name].content_hash,
        )  # fmt: skip


def test_every_command_works_on_a_bucket_database(s3, bucket_photos, tmp_path):
    db = fresh_db()
    flags = [f"--storage-option={k}={v}" for k, v in s3.options.items()]
    cli = [sys.executable, "-m", "crossmodal"]
    done = subprocess.run(
        [*cli, "index", bucket_photos, "--db", db, "--model", "shapes-tiny", "--json", *flags],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["new"] == 12
    # every other command finds the credentials in the standard environment
    env = {**os.environ, **s3.env}
    found = subprocess.run(
        [*cli, "search", "a red circle", "--db", db, "-k", "2", "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-3000:]
    hits = json.loads(found.stdout)
    assert len(hits) == 2 and all(h["path"].startswith(bucket_photos + "/") for h in hits)
    info = subprocess.run(
        [*cli, "info", "--db", db, "--json"], capture_output=True, text=True, env=env
    )
    assert json.loads(info.stdout)["tables"][0]["rows"] == 12
    labels = tmp_path / "labels.txt"
    labels.write_text("a red circle\na blue square\n")
    for command in (
        ["labels", "add", str(labels)],
        ["classify", "--all"],
        ["optimize"],
        ["duplicates", "--threshold", "0.999"],
    ):
        done = subprocess.run(
            [*cli, *command, "--db", db, "--json"], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, (command, done.stderr[-2000:])
    labelled = Store.open(db, storage_options=s3.options)
    assert labelled.text_table_names() == ["labels"]
    assert set(labelled.images(labelled.info("images").model).label_values()) <= {
        "a red circle",
        "a blue square",
    }


def test_a_missing_bucket_database_is_named_with_the_fix(s3):
    with pytest.raises(StoreError, match="no database at s3://photos/nothing-here.db"):
        Store.open("s3://photos/nothing-here.db", storage_options=s3.options)


def test_storage_options_must_be_key_value():
    assert parse_storage_options(["allow_http=true", "aws_endpoint=http://x:1"]) == {
        "allow_http": "true",
        "aws_endpoint": "http://x:1",
    }
    with pytest.raises(CrossmodalError, match="not KEY=VALUE"):
        parse_storage_options(["allow_http"])


def test_the_demo_shows_thumbnails_of_photos_in_the_bucket(
    s3, bucket_photos, model, tmp_path, monkeypatch
):
    from crossmodal_demo.service import DemoService
    from PIL import Image

    db = fresh_db()
    index_folder(bucket_photos, Store.open(db, create=True, storage_options=s3.options), model)
    for name, value in s3.env.items():  # the demo reads the standard environment
        monkeypatch.setenv(name, value)
    service = DemoService(db, model, tmp_path / "demo")
    results = service.search_text("a red circle", SearchOptions(k=4))
    assert len(results.items) == 4
    for item in results.items:
        assert item.problem is None and item.hit.path.startswith(bucket_photos + "/")
        assert Path(item.thumbnail).parent == tmp_path / "demo" / "thumbnails"
        assert Image.open(item.thumbnail).format == "JPEG"  # a copy made from the bucket


def test_two_writers_at_once_on_a_bucket_database_lose_nothing(s3, tmp_path, model):
    """No file lock on a bucket: Lance's optimistic commits keep both runs' rows."""
    storage = ObjectStorage(s3.options)
    base = f"s3://photos/{uuid.uuid4().hex[:8]}"
    for name, seed in (("left", 4), ("right", 5)):
        write_sample(tmp_path / name, 10, seed)
        upload(tmp_path / name, storage, f"{base}/{name}")
    db = f"{base}/photos.db"
    Store.open(db, create=True, storage_options=s3.options).images(model.identity, create=True)
    reports, errors = [], []

    def run(name: str) -> None:
        try:
            store = Store.open(db, storage_options=s3.options)
            reports.append(index_folder(f"{base}/{name}", store, model))
        except Exception as exc:  # collected: the test says which writer failed
            errors.append(exc)

    writers = [threading.Thread(target=run, args=(n,)) for n in ("left", "right")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors and sorted(r.new for r in reports) == [10, 10]
    table = Store.open(db, storage_options=s3.options).images(model.identity)
    paths = [r.path for r in table.rows()]
    assert len(paths) == len(set(paths)) == 20
    vectors = np.concatenate([v for _, v in table.vectors()])
    assert vectors.shape == (20, model.dim)
