"""DNS rebinding: the real Gradio server answers only requests addressed to its own names."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RELIABILITY, make_image
from crossmodal_demo.hosts import allowed_hosts, hostname

ROOT = Path(__file__).resolve().parent.parent

SERVER = """
import sys
from pathlib import Path

sys.path.insert(0, {tests!r})
from conftest import ColourEncoder

from crossmodal.cli.demo import app_module
from crossmodal_demo.service import DemoService

service = DemoService({db!r}, ColourEncoder(), Path({work!r}))
app_module().launch(service, host="127.0.0.1", port={port}, allow_indexing=True,
                    extra_hosts=("photos.example.org",))
"""


def test_host_names_are_read_from_headers_and_urls():
    assert hostname("127.0.0.1:7860") == "127.0.0.1"
    assert hostname("[::1]:7860") == "::1"
    assert hostname("Photos.Example.org") == "photos.example.org"
    assert hostname("http://evil.example:7860") == "evil.example"
    assert hostname("") == ""


def test_allowed_names_follow_the_listening_address():
    assert allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts("192.168.1.5", ["photos.lan"]) == {"192.168.1.5", "photos.lan"}
    assert allowed_hosts("0.0.0.0") is None  # names unknown: say them with --allowed-host
    assert allowed_hosts("0.0.0.0", ["nas.lan"]) == {"nas.lan", "127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import ColourEncoder
    from test_demo_browser import free_port

    from crossmodal.indexing import index_folder
    from crossmodal.store import Store

    root = tmp_path_factory.mktemp("hosts")
    make_image(root / "photos" / "red.jpg", "red")
    store = Store.open(root / "db", create=True)
    index_folder(root / "photos", store, ColourEncoder())
    from crossmodal.search.labels import add_texts

    add_texts(store, ColourEncoder(), ["red", "blue", "green"])
    port = free_port()
    script = SERVER.format(
        tests=str(Path(__file__).parent), db=str(root / "db"), work=str(root / "work"), port=port
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if request(port, "127.0.0.1")[0] == 200:
                break
        except OSError:
            time.sleep(0.5)
    yield port
    process.terminate()
    process.wait(timeout=30)


def request(port: int, host: str, origin: str | None = None, method: str = "GET", path: str = "/"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Host": host}
    if origin:
        headers["Origin"] = origin
    body = b"{}" if method == "POST" else None
    if body:
        headers["Content-Type"] = "application/json"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status, dict(response.getheaders())


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "photos.example.org"])
def test_its_own_names_are_served(server, host):
    assert request(server, host.format(port=server))[0] == 200


@pytest.mark.parametrize(
    "host, origin, method, path",
    [
        ("rebound.example:{port}", None, "GET", "/"),  # a page that pointed its name at 127.0.0.1
        (
            "rebound.example:{port}",
            "http://rebound.example:{port}",
            "POST",
            "/gradio_api/queue/join",
        ),
        ("127.0.0.1:{port}", "http://evil.example", "GET", "/config"),  # another site's page
        ("rebound.example:{port}", None, "GET", "/gradio_api/file=/etc/passwd"),
    ],
)
def test_requests_for_other_names_are_refused_without_echoing_them(
    server, host, origin, method, path
):
    status, headers = request(
        server, host.format(port=server), origin and origin.format(port=server), method, path
    )
    assert status == 403
    assert "access-control-allow-origin" not in {k.lower() for k in headers}
    refused = RELIABILITY.get("hardening / spoofed Host or Origin", "0").split()[0]
    RELIABILITY["hardening / spoofed Host or Origin"] = f"{int(refused) + 1} requests refused (403)"


def test_an_api_client_that_never_loaded_the_page_can_pick_a_label_table(server, tmp_path):
    from gradio_client import Client, handle_file

    photo = make_image(tmp_path / "q.png", "blue")
    client = Client(f"http://127.0.0.1:{server}", verbose=False)
    chart = client.predict(handle_file(str(photo)), "labels", "", api_name="/labels")
    assert chart["label"] == "blue"
