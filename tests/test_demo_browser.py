"""The demo end to end: the real server on a loopback port, driven in headless Chromium.

Needs Debian's chromium (`.ci/install-browser`) and Playwright (the `dev` extra). Screenshots go
to $CROSSMODAL_SCREENSHOTS, else a temporary folder; the test prints where.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 90  # seconds; importing gradio alone takes 5-10 s on a busy 2-core machine

pytestmark = [
    pytest.mark.browser,
    # CI installs the browser and must run this test; a developer without Chromium may skip it
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file() and not os.environ.get("CI"),
        reason="Chromium is not installed: run .ci/install-browser (Debian's chromium)",
    ),
]

SERVER = """
import sys
from pathlib import Path

sys.path.insert(0, {tests!r})
from conftest import ColourEncoder

from crossmodal.cli.demo import app_module
from crossmodal_demo.service import DemoService

# the encoder object is made here and handed down: the app never loads a model itself
service = DemoService({db!r}, ColourEncoder(), Path({work!r}))
app_module().launch(service, host="127.0.0.1", port={port}, allow_indexing=True)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path | str]]:
    """Photos, an index, a secret file outside them, and the demo serving the index."""
    from conftest import ColourEncoder

    from crossmodal.indexing import index_folder
    from crossmodal.search.labels import add_texts
    from crossmodal.store import Store

    base = tmp_path_factory.mktemp("site")
    photos = base / "photos"
    for name, colour in [
        ("red.jpg", "red"),
        ("green.png", "green"),
        ("blue.webp", "blue"),
        ("fields/yellow-field.jpg", "yellow"),
        ("trips/yellow.jpg", "yellow"),
        ("trips/2019/cyan.png", "cyan"),
        ("trips/2019/black.gif", "black"),
        ("white.jpg", "white"),
    ]:
        make_image(photos / name, colour, size=(640, 480))
    secret = base / "secret" / "private.jpg"
    make_image(secret, "magenta")
    (photos / "link-out.jpg").symlink_to(secret)  # a symlink out of the folder is indexed too
    encoder = ColourEncoder()
    store = Store.open(base / "db", create=True)
    index_folder(photos, store, encoder)
    add_texts(store, encoder, ["red", "green", "blue", "yellow"], table="colours")
    work = base / "work"
    port = free_port()
    script = base / "server.py"
    script.write_text(
        SERVER.format(tests=str(ROOT / "tests"), db=str(base / "db"), work=str(work), port=port)
    )
    log = (base / "server.log").open("w")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    server = subprocess.Popen(
        [sys.executable, str(script)], cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while status_of_or_none(url) != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the demo did not start:\n" + (base / "server.log").read_text())
            time.sleep(0.25)
        yield {"url": url, "photos": photos, "secret": secret, "work": work, "db": base / "db"}
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def status_of_or_none(url: str) -> int | None:
    try:
        return status_of(url)
    except OSError:
        return None


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(
        os.environ.get("CROSSMODAL_SCREENSHOTS") or ROOT / "out" / "screenshots"
    ).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the demo: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, site):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(20_000)
    page.goto(str(site["url"]))
    page.wait_for_selector("#status :text('photos')")
    yield page
    page.close()


def captions(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all("#gallery .caption-label", "els => els.map(e => e.innerText)")


def wait_for_summary(page, text: str) -> str:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "text => document.querySelector('#summary').innerText.includes(text)", arg=text
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery img')].every(i => i.complete)"
    )
    return str(page.inner_text("#summary"))


def toast_text(page) -> str:  # type: ignore[no-untyped-def]
    page.wait_for_selector("[data-testid=toast-body]")
    return " ".join(
        page.eval_on_selector_all("[data-testid=toast-body]", "els => els.map(e => e.innerText)")
    )


def test_status_names_model_device_and_counts(page, screenshots):
    status = page.inner_text("#status")
    assert "fake-colours" in status and "CPU" in status
    assert "9 photos" in status and "colours (4)" in status
    page.screenshot(path=screenshots / "0-start.png", full_page=True)


def test_typing_a_query_shows_the_matching_photo_first(page, screenshots):
    page.fill("#query textarea", "red")
    page.keyboard.press("Enter")
    summary = wait_for_summary(page, 'for "red"')
    assert summary.startswith('9 photos for "red"')
    found = captions(page)
    assert found[0] == "1.000 · red.jpg"
    assert all(caption.startswith("0.000 · ") for caption in found[1:])
    page.screenshot(path=screenshots / "1-text-search.png", full_page=True)


def test_clicking_a_photo_shows_details_then_more_like_this(page, site, screenshots):
    page.fill("#query textarea", "yellow")
    page.keyboard.press("Enter")
    wait_for_summary(page, 'for "yellow"')
    page.locator("#gallery .thumbnail-item", has_text="yellow.jpg").first.click()
    page.wait_for_selector("#details :text('yellow.jpg')")
    details = page.inner_text("#details")
    assert "640 × 480 px" in details and "JPEG" in details
    assert f"folder: {site['photos'] / 'trips'}" in details
    page.wait_for_selector("#preview img")
    page.screenshot(path=screenshots / "2-details.png", full_page=True)
    page.get_by_role("button", name="More like this").click()
    wait_for_summary(page, "photos like yellow.jpg")
    found = captions(page)
    assert found[0] == "1.000 · yellow-field.jpg"
    assert "1.000 · yellow.jpg" not in found and len(found) == 8


def test_uploading_a_photo_shows_its_neighbours(page, screenshots, tmp_path):
    query = make_image(tmp_path / "my-green.png", "green", size=(300, 200))
    page.get_by_role("tab", name="Photo → photos").click()
    page.set_input_files("#upload input[type=file]", str(query))
    wait_for_summary(page, "photos like my-green.png")
    assert captions(page)[0] == "1.000 · green.png"
    page.screenshot(path=screenshots / "3-image-search.png", full_page=True)


def test_uploading_a_non_image_shows_a_readable_error(page, screenshots, tmp_path):
    page.get_by_role("tab", name="Photo → photos").click()
    broken = tmp_path / "holiday.jpg"
    broken.write_bytes(b"\xff\xd8\xff this is not really a JPEG")
    page.set_input_files("#upload input[type=file]", str(broken))
    message = toast_text(page)
    assert "holiday.jpg is not a photo crossmodal can read" in message
    assert "Drop a JPEG, PNG, WebP, GIF, TIFF or BMP file." in message
    assert "Traceback" not in message
    page.screenshot(path=screenshots / "4-not-an-image.png", full_page=True)


def test_labels_for_a_photo_as_a_chart(page, screenshots, tmp_path):
    query = make_image(tmp_path / "sunny.jpg", "yellow", size=(300, 200))
    page.get_by_role("tab", name="Photo → labels").click()
    page.get_by_label("Labels from").click()
    page.get_by_role("option", name="typed labels").click()
    page.fill("#typed-labels textarea", "a red car, a yellow field, a blue sea")
    page.set_input_files("#label-upload input[type=file]", str(query))
    page.wait_for_selector("#chart :text('a yellow field')")
    chart = page.inner_text("#chart")
    assert chart.index("a yellow field") < chart.index("a red car")
    assert "100%" in chart
    page.screenshot(path=screenshots / "5-labels.png", full_page=True)


def test_only_thumbnails_of_indexed_photos_can_be_fetched(page, site):
    page.fill("#query textarea", "red")
    page.keyboard.press("Enter")
    wait_for_summary(page, 'for "red"')
    shown = page.eval_on_selector_all("#gallery img", "els => els.map(e => e.src)")
    assert shown and all(status_of(src) == 200 for src in shown)
    work, photos, secret = Path(site["work"]), Path(site["photos"]), Path(site["secret"])
    (work / "thumbnails" / "planted.jpg").symlink_to(secret)
    attempts = [
        str(photos / "red.jpg"),  # an indexed original
        str(photos / "link-out.jpg"),  # a symlink out of the photo folder
        str(secret),  # any other file of the machine
        "/etc/passwd",
        f"{work}/thumbnails/../../secret/private.jpg",  # climbing out of the served folder
        f"{work}/thumbnails/%2e%2e/%2e%2e/secret/private.jpg",
        f"{work}/thumbnails/planted.jpg",  # a symlink planted in the served folder
        str(Path(site["db"]) / "images.lance"),
    ]
    base = str(site["url"])
    for path in attempts:
        assert status_of(f"{base}/gradio_api/file={path}") == 403, path
        assert status_of(f"{base}/file={path}") in (403, 404), path
