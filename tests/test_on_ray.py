"""The Ray engine builds the table `index_folder` builds: same rows, metadata and vectors, the
same incremental plan, and no duplicate or loss when an actor or the driver is killed.

One local Ray serves the module (its start-up is most of a run's time); a test that needs a
driver of its own starts one in a subprocess. Every Ray process is stopped at teardown.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from crossmodal.errors import CrossmodalError
from crossmodal.evaluate.synthetic import write_sample
from crossmodal.indexing import IndexConfig, index_folder
from crossmodal.model.encoder import EncoderConfig, load_encoder
from crossmodal.store import Store

ray = pytest.importorskip("ray", reason="the Ray engine: pip install 'crossmodal[ray]'")
from crossmodal.indexing.on_ray import STAGING_DIR, RayConfig, index_folder_on_ray  # noqa: E402

FP32 = EncoderConfig(device="cpu", precision="fp32")


def ray_processes(temp_dir: Path) -> list[psutil.Process]:
    """Processes of the Ray whose session lives under `temp_dir`."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            text = " ".join(process.info["cmdline"] or [])
            env = process.info["environ"] or {}
        except (psutil.Error, TypeError):
            continue
        if str(temp_dir) in text or env.get("RAY_TMPDIR") == str(temp_dir):
            found.append(process)
    return [p for p in found if p.pid != os.getpid()]


@pytest.fixture(scope="module")
def ray_temp() -> Iterator[Path]:
    # a short folder of the module's own: Ray's socket paths must stay under 108 bytes
    path = Path(f"/tmp/cmray-{os.getpid()}")
    path.mkdir(exist_ok=True)
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(path)
    yield path
    for process in ray_processes(path):  # what a SIGKILLed driver left behind
        process.kill()
    psutil.wait_procs(ray_processes(path), timeout=20)
    assert not ray_processes(path), "Ray processes outlived the tests"
    if saved is None:
        del os.environ["RAY_TMPDIR"]
    else:
        os.environ["RAY_TMPDIR"] = saved
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def local_ray(ray_temp: Path) -> Iterator[None]:
    ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return load_encoder("shapes-tiny", FP32)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Sample shapes, an EXIF-rotated JPEG and a corrupt file."""
    root = tmp_path / "photos"
    write_sample(root, 40, 0)
    upright = Image.open(sorted(root.glob("*.png"))[0]).convert("RGB").resize((96, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90°: stored sideways
    exif.get_ifd(0x8769)[36867] = "2019:07:14 18:30:05"
    upright.transpose(Image.Transpose.ROTATE_90).save(root / "sideways.jpg", exif=exif)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def table_contents(db: Path, encoder) -> tuple[object, dict[str, dict], dict[str, np.ndarray]]:
    table = Store.open(db).images(encoder.identity)._table
    data = table.to_arrow()
    rows = {}
    vectors = {}
    for row in data.to_pylist():
        vectors[row["path"]] = np.asarray(row.pop("vector"), np.float32)
        row.pop("indexed_at")  # when it was written: the only column that may differ
        rows[row["path"]] = row
    assert len(rows) == data.num_rows, "a path is stored twice"
    return table.schema, rows, vectors


def assert_same_table(db_a: Path, db_b: Path, encoder) -> None:
    schema_a, rows_a, vectors_a = table_contents(db_a, encoder)
    schema_b, rows_b, vectors_b = table_contents(db_b, encoder)
    assert schema_a == schema_b
    assert schema_a.metadata == schema_b.metadata  # the model identity record
    assert rows_a == rows_b
    for path, vector in vectors_a.items():
        np.testing.assert_allclose(vectors_b[path], vector, atol=1e-5)


def on_ray(folder: Path, db: Path, encoder, **options) -> object:
    config = RayConfig(precision="fp32", **options)
    return index_folder_on_ray(folder, Store.open(db, create=True), encoder, None, config)


def test_the_ray_table_is_the_local_table(local_ray, folder, tmp_path, model, caplog):
    local = index_folder(folder, Store.open(tmp_path / "local.db", create=True), model)
    with caplog.at_level(logging.DEBUG, logger="crossmodal.indexing.on_ray"):
        report = on_ray(folder, tmp_path / "ray.db", model, actors=2, shard_rows=16)
    assert (report.new, report.encoded, report.removed) == (local.new, local.encoded, 0)
    assert report.failed == local.failed
    assert [f.path.rsplit("/", 1)[1] for f in report.failed] == ["broken.jpg"]
    assert_same_table(tmp_path / "local.db", tmp_path / "ray.db", model)
    _, rows, _ = table_contents(tmp_path / "ray.db", model)
    sideways = rows[str(folder / "sideways.jpg")]
    assert (sideways["width"], sideways["height"]) == (96, 48)  # upright, as EXIF says
    assert str(sideways["captured_at"]) == "2019-07-14 18:30:05"
    # decoding is a stage of its own, not fused into the encoder actors
    stats = "\n".join(
        r.getMessage() for r in caplog.records if "account of the run" in r.getMessage()
    )
    assert "MapBatches(_decode_batch):" in stats and "MapBatches(EncoderActor):" in stats, stats
    assert not (tmp_path / "ray.db" / STAGING_DIR).exists() or not any(
        (tmp_path / "ray.db" / STAGING_DIR).iterdir()
    )


def test_each_engine_finds_nothing_to_do_after_the_other(local_ray, folder, tmp_path, model):
    index_folder(folder, Store.open(tmp_path / "a.db", create=True), model)
    again = on_ray(folder, tmp_path / "a.db", model)
    assert (again.new, again.updated, again.encoded, again.removed) == (0, 0, 0, 0)
    on_ray(folder, tmp_path / "b.db", model)
    again = index_folder(folder, Store.open(tmp_path / "b.db"), model)
    assert (again.new, again.updated, again.encoded, again.removed) == (0, 0, 0, 0)
    assert again.unchanged == 41


def test_an_incremental_ray_run_matches_a_fresh_local_index(local_ray, folder, tmp_path, model):
    on_ray(folder, tmp_path / "ray.db", model)
    names = sorted(p for p in folder.glob("*.png"))
    shutil.copyfile(names[1], names[0])  # changed content
    names[2].unlink()  # deleted
    names[3].rename(folder / "moved-here.png")  # moved
    stat = names[4].stat()
    os.utime(names[4], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched only
    shutil.copyfile(names[5], folder / "added.png")  # new (same bytes as another photo)
    report = on_ray(folder, tmp_path / "ray.db", model, shard_rows=2)
    assert (report.new, report.updated, report.moved, report.removed) == (1, 1, 1, 1)
    assert report.encoded == 3  # the touched photo keeps its vector
    index_folder(folder, Store.open(tmp_path / "fresh.db", create=True), model)
    assert_same_table(tmp_path / "fresh.db", tmp_path / "ray.db", model)


def encoder_actor_processes() -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if "EncoderActor" in " ".join(p.info["cmdline"] or []) + (p.info["name"] or "")
    ]


def test_a_killed_encoder_actor_is_retried_without_duplicates(local_ray, tmp_path, model):
    folder = tmp_path / "photos"
    write_sample(folder, 160, 1)
    killed = []

    def kill_an_actor(event):
        if not killed:
            actors = encoder_actor_processes()
            assert actors, "no encoder actor is running mid-run"
            actors[0].send_signal(signal.SIGKILL)
            killed.append(actors[0].pid)

    config = RayConfig(precision="fp32", shard_rows=8)
    report = index_folder_on_ray(
        folder, Store.open(tmp_path / "ray.db", create=True), model, IndexConfig(batch_size=4),
        config, on_progress=kill_an_actor,
    )  # fmt: skip
    assert killed and report.new == 160 and not report.failed
    index_folder(folder, Store.open(tmp_path / "local.db", create=True), model)
    assert_same_table(tmp_path / "local.db", tmp_path / "ray.db", model)


DRIVER = """
import os, signal, sys
from crossmodal.indexing import IndexConfig
from crossmodal.indexing.on_ray import RayConfig, index_folder_on_ray
from crossmodal.model.encoder import EncoderConfig, load_encoder
from crossmodal.store import Store

def die(event):
    print(event.done, flush=True)
    if event.done >= 16:
        os.kill(os.getpid(), signal.SIGKILL)

model = load_encoder("shapes-tiny", EncoderConfig(device="cpu", precision="fp32"))
index_folder_on_ray(sys.argv[1], Store.open(sys.argv[2], create=True), model,
    IndexConfig(batch_size=4), RayConfig(precision="fp32", shard_rows=8), on_progress=die)
"""


def test_a_sigkilled_driver_loses_at_most_a_shard_and_the_rerun_is_exact(
    local_ray, ray_temp, tmp_path, model
):
    folder = tmp_path / "photos"
    write_sample(folder, 120, 2)
    db = tmp_path / "ray.db"
    its_ray = ray_temp / "killed"
    its_ray.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(folder), str(db)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_TMPDIR": str(its_ray)},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    # the Ray the killed driver started winds itself down (its workers may write a moment longer)
    gone, alive = psutil.wait_procs(ray_processes(its_ray), timeout=60)
    assert gone and not alive, f"the killed driver's Ray outlived it: {alive}"
    committed = int(done.stdout.split()[-1])
    kept = Store.open(db).images(model.identity).count()
    assert kept >= committed >= 16
    assert any((db / STAGING_DIR).iterdir())  # the killed run's staging data was left behind
    rerun = on_ray(folder, db, model)
    assert (rerun.new, rerun.unchanged) == (120 - kept, kept)
    assert not any((db / STAGING_DIR).iterdir())  # and is cleaned up
    index_folder(folder, Store.open(tmp_path / "local.db", create=True), model)
    assert_same_table(tmp_path / "local.db", db, model)


def test_asking_for_more_gpus_than_the_cluster_has_is_refused(local_ray, folder, tmp_path, model):
    with pytest.raises(CrossmodalError, match="need 2 GPUs; the Ray cluster has 0"):
        on_ray(folder, tmp_path / "ray.db", model, actors=2, gpus_per_actor=1)


@pytest.mark.parametrize(
    "options", [{"actors": 0}, {"gpus_per_actor": -1}, {"cpus_per_actor": 0}, {"shard_rows": 0}]
)
def test_ray_options_out_of_range_are_refused(options):
    with pytest.raises(CrossmodalError):
        RayConfig(**options)


def test_the_cli_indexes_with_ray_and_the_local_engine_finds_nothing_to_do(
    ray_temp, folder, tmp_path
):
    db = tmp_path / "cli.db"
    env = {**os.environ, "RAY_TMPDIR": str(ray_temp / "cli")}
    (ray_temp / "cli").mkdir()
    command = [sys.executable, "-m", "crossmodal", "index", str(folder), "--db", str(db)]
    command += ["--model", "shapes-tiny", "--json"]
    done = subprocess.run(
        [*command, "--engine", "ray", "--actors", "2", "--precision", "fp32"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert (report["new"], report["encoded"]) == (41, 41)
    assert [Path(f["path"]).name for f in report["failed"]] == ["broken.jpg"]
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads(again.stdout)
    assert (report["new"], report["updated"], report["encoded"], report["unchanged"]) == (
        0, 0, 0, 41,
    )  # fmt: skip
    gone, alive = psutil.wait_procs(ray_processes(ray_temp / "cli"), timeout=60)
    assert not alive, f"the CLI's Ray outlived it: {alive}"


def test_photos_and_database_on_object_storage(local_ray, s3, folder, tmp_path, model):
    """Through the loopback S3 server: the Ray engine's table equals the local engine's."""
    from crossmodal.media.remote import ObjectStorage

    storage = ObjectStorage(s3.options)
    prefix = f"s3://photos/ray-{os.getpid()}"
    for path in sorted(folder.iterdir()):
        storage.write(f"{prefix}/pics/{path.name}", path.read_bytes())
    stores = {}
    for name in ("ray", "local"):
        stores[name] = Store.open(f"{prefix}/{name}.db", create=True, storage_options=s3.options)
    report = index_folder_on_ray(
        f"{prefix}/pics", stores["ray"], model, None, RayConfig(precision="fp32", shard_rows=16)
    )
    assert report.new == 41 and [Path(f.path).name for f in report.failed] == ["broken.jpg"]
    index_folder(f"{prefix}/pics", stores["local"], model)
    tables = {n: s.images(model.identity)._table.to_arrow() for n, s in stores.items()}
    assert tables["ray"].schema == tables["local"].schema
    rows = {
        n: {r["path"]: r for r in t.drop_columns(["indexed_at"]).to_pylist()}
        for n, t in tables.items()
    }
    assert rows["ray"].keys() == rows["local"].keys()
    for path, row in rows["ray"].items():
        other = rows["local"][path]
        np.testing.assert_allclose(row.pop("vector"), other.pop("vector"), atol=1e-5)
        assert row == other
    assert not storage.list_files(f"{prefix}/ray.db/{STAGING_DIR}")  # staging cleaned up


def test_ray_options_without_the_ray_engine_are_refused(folder, tmp_path):
    from click.testing import CliRunner

    from crossmodal.cli import main

    result = CliRunner().invoke(
        main, ["index", str(folder), "--db", str(tmp_path / "db"), "--actors", "2"]
    )
    assert result.exit_code == 2 and "need --engine ray" in result.output
    assert not (tmp_path / "db").exists()
