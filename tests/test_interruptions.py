"""Interruptions and concurrency: SIGKILL at random points, concurrent writers and readers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import NAMES, RELIABILITY, ColourEncoder, make_image
from crossmodal_demo.service import DemoService

from crossmodal.indexing import IndexConfig, index_folder
from crossmodal.search import Searcher, SearchOptions
from crossmodal.store import Store
from crossmodal.store.lock import DatabaseBusyError, WriterLock

TESTS = Path(__file__).parent
RUNNER = """
import sys, time
sys.path.insert(0, sys.argv[3])
from conftest import ColourEncoder
from crossmodal.indexing import IndexConfig, index_folder
from crossmodal.store import Store

class SlowEncoder(ColourEncoder):
    def encode_images(self, images):
        if not self.images_encoded:
            print("encoding", flush=True)  # the test kills only after this: mid-run
        time.sleep(0.1)  # a slow model: the run spans many commits a kill can fall between
        return super().encode_images(images)

store = Store.open(sys.argv[2], create=True)
index_folder(sys.argv[1], store, SlowEncoder(), IndexConfig(batch_size=3))  # takes the lock
print("finished")
"""


def _library(root: Path, count: int) -> dict[str, str]:
    colours = {}
    for i in range(count):
        colour = NAMES[i % 7]
        make_image(root / f"d{i % 5}" / f"{i:03}-{colour}.png", colour, size=(20 + i % 9, 20))
        colours[str(root / f"d{i % 5}" / f"{i:03}-{colour}.png")] = colour
    return colours


def _run(photos: Path, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(photos), str(db), str(TESTS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_table_matches(db: Path, colours: dict[str, str]) -> None:
    encoder = ColourEncoder()
    table = Store.open(db).images(encoder.identity)
    rows = table.rows()
    paths = [r.path for r in rows]
    assert len(paths) == len(set(paths)), "duplicate rows"
    assert sorted(paths) == sorted(colours), "missing or orphaned rows"
    for path, colour in colours.items():
        vector = table.get(path)[1]
        assert vector.tolist() == encoder.encode_texts([colour])[0].tolist(), path


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_loses_nothing(tmp_path: Path):
    photos, db = tmp_path / "photos", tmp_path / "db"
    colours = _library(photos, 150)
    rng = random.Random(1234)
    kills = 0
    for round_ in range(8):
        if round_ == 4:  # change the library half-way: delete some, add some, rename one
            for path in list(colours)[:6]:
                os.unlink(path)
                del colours[path]
            for i in range(6):
                path = photos / "new" / f"n{i}-red.png"
                make_image(path, "red", size=(30 + i, 30))
                colours[str(path)] = "red"
            old = list(colours)[10]
            new = str(photos / "renamed.png")
            os.rename(old, new)
            colours[new] = colours.pop(old)
        process = _run(photos, db)
        assert process.stdout is not None
        if process.stdout.readline().strip() == "encoding":  # empty when nothing is left to do
            time.sleep(rng.uniform(0.05, 0.6))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    final = _run(photos, db)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert "finished" in out
    RELIABILITY["interruptions"] = (
        f"{kills} SIGKILLs survived in 8 index runs; final table exact ({len(colours)} files, "
        "no duplicate, no orphan, every vector right)"
    )
    assert kills >= 6, "the kills must land mid-run to prove anything"
    _assert_table_matches(db, colours)


def test_second_writer_is_refused_with_the_fix(tmp_path: Path):
    with WriterLock(tmp_path), pytest.raises(DatabaseBusyError) as info, WriterLock(tmp_path):
        pass
    assert f"pid {os.getpid()}" in str(info.value)
    assert "--wait" in str(info.value)
    with WriterLock(tmp_path):  # released after the first holder left
        pass


def test_two_index_runs_on_one_database_serialise_or_refuse(photos, tmp_path: Path):
    store = Store.open(tmp_path / "db", create=True)
    holder = WriterLock(store.db_dir).__enter__()  # another run is writing
    with pytest.raises(DatabaseBusyError, match="--wait"):
        index_folder(photos, store, ColourEncoder())
    assert "images" not in store.table_names()  # refused before writing anything
    threading.Timer(0.5, holder.__exit__, (None, None, None)).start()
    report = index_folder(photos, store, ColourEncoder(), IndexConfig(wait=10))
    assert report.new == 6  # queued behind the first run, then ran


def test_lock_of_a_killed_writer_is_released(tmp_path: Path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from crossmodal.store.lock import WriterLock\n"
                f"l = WriterLock({str(tmp_path)!r}).__enter__(); print('locked', flush=True); "
                "time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(DatabaseBusyError):
        WriterLock(tmp_path).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with WriterLock(tmp_path, wait=5):
        pass


def test_searches_during_an_index_run_stay_consistent(tmp_path: Path):
    photos, db = tmp_path / "photos", tmp_path / "db"
    _library(photos, 30)
    store = Store.open(db, create=True)
    encoder = ColourEncoder()
    index_folder(photos, store, encoder, IndexConfig(batch_size=5))
    for i in range(60):
        make_image(photos / "extra" / f"{i:03}.png", NAMES[i % 7])
    errors: list[BaseException] = []
    searches = 0
    done = threading.Event()

    def search_loop() -> None:
        nonlocal searches
        searcher = Searcher(Store.open(db), encoder)
        query = encoder.encode_texts(["red"])[0]
        while not done.is_set():
            try:
                hits = searcher.by_vector(query, SearchOptions(k=200))
                paths = [h.path for h in hits]
                assert len(paths) == len(set(paths))
                assert 30 <= len(hits) <= 90
                assert all(np.isfinite(h.score) for h in hits)
                searches += 1
            except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
                errors.append(exc)
                return

    class SlowColourEncoder(ColourEncoder):
        def encode_images(self, images):  # a model slow enough for searches to overlap
            time.sleep(0.05)
            return super().encode_images(images)

    reader = threading.Thread(target=search_loop)
    reader.start()
    while searches == 0 and not errors and reader.is_alive():  # the reader is up and searching
        time.sleep(0.01)
    before = searches
    index_folder(photos, store, SlowColourEncoder(), IndexConfig(batch_size=5))
    during = searches - before
    done.set()
    reader.join()
    assert not errors, errors[0]
    assert during > 0
    RELIABILITY["concurrency"] = (
        f"{during} searches during an index run, {len(errors)} failures; "
        "second writer refused / queued"
    )


def test_an_open_searcher_sees_another_processes_commits_at_once(tmp_path: Path):
    """A search holds its table open (the demo, a notebook); an index run in another process
    commits batch after batch. Each search must see every commit made before it started."""
    photos, db = tmp_path / "photos", tmp_path / "db"
    _library(photos, 6)
    encoder = ColourEncoder()
    index_folder(photos, Store.open(db, create=True), encoder)
    searcher = Searcher(Store.open(db), encoder)  # opened once, before the other process writes
    demo = DemoService(db, encoder, tmp_path / "work")
    query = encoder.encode_texts(["red"])[0]
    assert len(searcher.by_vector(query, SearchOptions(k=100))) == 6
    for i in range(60):
        make_image(photos / "extra" / f"{i:03}.png", NAMES[i % 7])
    run = _run(photos, db)
    seen, shown = [], []
    while run.poll() is None:
        seen.append(len(searcher.by_vector(query, SearchOptions(k=100))))
        shown.append(demo.status().images)
        time.sleep(0.05)
    assert run.returncode == 0, run.stderr.read() if run.stderr else ""
    assert (
        len(searcher.by_vector(query, SearchOptions(k=100))) == 66
    )  # the last commit, with no delay
    assert demo.status().images == 66
    assert seen == sorted(seen) and len(set(seen)) > 3  # and the ones during the run
    assert shown == sorted(shown) and len(set(shown)) > 3
