"""Hostile and unlucky inputs through the real CLI: file names that are not UTF-8, folders that
cannot be listed during a re-index, extreme aspect ratios, bad table names. Each one either
works or gets one clear line, and no stored row is lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import RELIABILITY
from PIL import Image

from crossmodal.evaluate.synthetic import Scene, render_scene

NOBODY = 65534


def shape(path: Path | bytes, colour: str = "red", kind: str = "circle") -> None:
    import random

    picture = render_scene(Scene(kind, colour, "center", "white"), random.Random(0))
    with open(path, "wb") as fh:
        picture.save(fh, format="PNG")


def crossmodal(*args: object, user: int | None = None, cwd: Path | None = None):
    command = [sys.executable, "-m", "crossmodal", *map(str, args)]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


def test_file_names_that_are_not_utf8_are_indexed_and_never_block_a_folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    raw = os.fsencode(photos)
    shape(raw + b"/caf\xe9.png", "red")  # Latin-1 é, as old cameras and Windows shares write it
    shape(raw + b"/\xff\xfe.png", "blue")
    shape(photos / "plain.png", "green")
    db = tmp_path / "db"
    first = crossmodal("index", photos, "--db", db, "--model", "shapes-tiny", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["new"], report["failed"]) == (3, [])
    hits = json.loads(crossmodal("search", "a red circle", "--db", db, "--json", "-k", "1").stdout)
    assert hits[0]["name"] == "caf\\xe9.png"  # printable, and it names the file on disk
    (photos / "plain.png").unlink()
    again = json.loads(crossmodal("index", photos, "--db", db, "--json").stdout)
    assert (again["new"], again["unchanged"], again["removed"]) == (0, 2, 1)

    from crossmodal import Store
    from crossmodal.media.files import open_path

    store = Store.open(db)
    rows = store.images(store.info("images").model).rows()
    on_disk = sorted(os.path.basename(os.fsencode(open_path(r.path))) for r in rows)
    assert on_disk == [b"caf\xe9.png", b"\xff\xfe.png"]
    RELIABILITY["hardening / names not UTF-8"] = "2 files indexed, re-indexed, 1 deletion applied"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_a_folder_that_cannot_be_listed_keeps_its_rows(tmp_path):
    # root reads every folder: the index runs as nobody, in a folder nobody can reach
    tmp_path = Path(tempfile.mkdtemp(prefix="crossmodal-unlisted-"))
    tmp_path.chmod(0o755)
    photos = tmp_path / "photos"
    for folder, colour in (("a", "red"), ("b", "blue")):
        (photos / folder).mkdir(parents=True)
        for i in range(2):
            shape(photos / folder / f"{i}.png", colour)
    db = tmp_path / "db"
    db.mkdir(mode=0o777)
    db.chmod(0o777)
    user = NOBODY if os.geteuid() == 0 else None
    first = crossmodal("index", photos, "--db", db, "--model", "shapes-tiny", "--json", user=user)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["new"] == 4
    (photos / "b").chmod(0o000)  # a permission change, or a network share that hiccups
    try:
        blocked = crossmodal("index", photos, "--db", db, "--json", user=user)
    finally:
        (photos / "b").chmod(0o755)
    assert blocked.returncode == 0, blocked.stderr
    report = json.loads(blocked.stdout)
    assert (report["removed"], report["unchanged"]) == (0, 2)
    assert [f["reason"] for f in report["failed"]] == ["cannot list folder: Permission denied"]
    after = json.loads(crossmodal("index", photos, "--db", db, "--json", user=user).stdout)
    assert (after["new"], after["unchanged"], after["removed"]) == (0, 4, 0)
    shutil.rmtree(tmp_path)
    RELIABILITY["hardening / unlistable folder"] = (
        "2 rows kept while unreadable, 0 re-encoded after"
    )


@pytest.mark.parametrize("size", [(50_000, 1), (1, 60_000), (7, 9_000)])
def test_extreme_aspect_ratios_cost_memory_of_the_model_input_only(tmp_path, size):
    import tracemalloc

    from crossmodal.media.images import PixelRecipe, to_pixels

    picture = Image.new("RGB", size, (200, 30, 30))
    tracemalloc.start()
    pixels = to_pixels(picture, PixelRecipe((224, 224)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert pixels.shape == (224, 224, 3)
    assert np.all(pixels == (200, 30, 30))
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB for one {size} image"


@pytest.mark.parametrize("name", ["../escape", "a b", "", "x" * 200, "labels;drop"])
def test_bad_text_table_names_get_one_clear_line(tmp_path, name):
    (tmp_path / "labels.txt").write_text("a red circle\n")
    done = crossmodal(
        "labels",
        "add",
        tmp_path / "labels.txt",
        "--table",
        name,
        "--db",
        tmp_path / "db",
        "--model",
        "shapes-tiny",
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: text table name"), done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs for the database (CI runs as root); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)  # detached even if busy


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_names_the_real_cause_and_leaves_every_table_as_it_was(tmp_path, small_disk):
    from crossmodal.evaluate.synthetic import write_sample

    sample = write_sample(tmp_path / "photos", count=6)
    assert sample is not None
    db = small_disk / "db"
    assert crossmodal("index", sample.folder, "--db", db, "--model", "shapes-tiny").returncode == 0
    assert crossmodal("labels", "add", sample.labels, "--db", db).returncode == 0
    before = crossmodal("labels", "list", "--db", db, "--json").stdout
    for i in range(6, 9):
        shape(sample.folder / f"new-{i}.png", "green", "star")
    (tmp_path / "more.txt").write_text("a green star\nsomething new\n")
    filler = fill(small_disk)
    attempts = [
        crossmodal("labels", "add", tmp_path / "more.txt", "--db", db),
        crossmodal("index", sample.folder, "--db", db),
        crossmodal("index", sample.folder, "--db", small_disk / "new-db", "--model", "shapes-tiny"),
    ]
    for done in attempts:
        assert done.returncode == 1, done.stderr
        assert done.stderr.lstrip().startswith("error: the disk holding"), done.stderr
        assert "no space left on device" in done.stderr and "free space on that disk" in done.stderr
        assert "--rebuild" not in done.stderr and "Traceback" not in done.stderr
    filler.unlink()
    assert crossmodal("labels", "list", "--db", db, "--json").stdout == before
    assert crossmodal("labels", "add", tmp_path / "more.txt", "--db", db).returncode == 0
    report = json.loads(crossmodal("index", sample.folder, "--db", db, "--json").stdout)
    assert (report["new"], report["unchanged"]) == (3, 6)
    hits = json.loads(crossmodal("search", "a green star", "--db", db, "--json", "-k", "50").stdout)
    assert len(hits) == 9 and len({h["path"] for h in hits}) == 9  # no duplicate, no loss
    RELIABILITY["hardening / full disk"] = (
        f"{len(attempts)} writes refused with the real cause; tables unchanged; resumed exactly"
    )
