"""The README is a test: its Python block and its main command run as a new user runs them.

The Python block is read from README.md itself (never re-typed here) and run as a plain script
without a `__main__` guard, typed into the interactive interpreter, in a thread, and in a
notebook kernel; mypy checks it with --strict.
`make demo` with no arguments runs offline and the demo it opens answers a search.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def python_block() -> str:
    match = re.search(r"^## Python\n.*?^```python\n(.*?)^```", README.read_text(), re.S | re.M)
    assert match, "README.md has a '## Python' section with a python code block"
    return match.group(1)


def check_output(out: str) -> None:
    """What the README's example prints on the sample folder with the shipped model."""
    lines = out.replace("\r", "\n").splitlines()
    assert "48 new, 0 unchanged, 0 failed" in lines
    assert re.match(
        r"0\.\d{3} \d{3}-red-circle-", lines[lines.index("48 new, 0 unchanged, 0 failed") + 1]
    )
    assert any(line.startswith("no indexed photo is in a folder 'Holidays'") for line in lines)
    assert re.search(r"^\d+% a blue square$", out, re.M), out  # the composed query's first hit
    assert "a circle" in lines or "a star" in lines  # the typed labels (a REPL also echoes values)


def test_the_readme_example_runs_as_a_plain_script_twice(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(python_block())
    first = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr
    check_output(first.stdout)
    assert "Traceback" not in first.stderr
    again = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert "0 new, 48 unchanged, 0 failed" in again.stdout.replace("\r", "\n").splitlines()
    # the library kept the table's indexes itself: keyword indexes exist without `optimize`
    from crossmodal import Store

    store = Store.open(tmp_path / "photos.db")
    state = store.images(store.info("images").model).index_state()
    assert state.keyword_columns == ("folder", "name")


def test_the_readme_example_runs_typed_into_the_interactive_interpreter(tmp_path):
    # `python -i` reads stdin line by line as the REPL does; `__main__` has no file to re-run
    done = subprocess.run(
        [sys.executable, "-i", "-q"],
        input=python_block() + "\n",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    check_output(done.stdout)


def test_the_readme_example_runs_in_a_thread(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            exec(compile(python_block(), "README.md", "exec"), {"__name__": "readme"})
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=300)
    assert not worker.is_alive() and errors == []
    check_output(capsys.readouterr().out)


def test_the_readme_example_runs_in_a_notebook_kernel(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(python_block())])
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = notebook.cells[0].outputs
    assert [o for o in outputs if o.output_type == "error"] == []
    check_output("".join(o.get("text", "") for o in outputs if o.output_type == "stream"))


def test_mypy_sees_real_types_in_the_readme_example(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(
        python_block()
        + "reveal_type(searcher.search)\nreveal_type(report.failed)\nreveal_type(encoder)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        timeout=300,
    )
    revealed = re.findall(r'Revealed type is "(.*)"', done.stdout)
    assert len(revealed) == 3, done.stdout
    assert revealed[0].endswith("-> list[crossmodal.search.searcher.SearchHit]")
    assert revealed[1].endswith("tuple[crossmodal.media.files.FailedFile, ...]")
    assert revealed[2] == "crossmodal.model.encoder.ClipEncoder"
    assert "error" not in done.stdout, done.stdout


def test_the_public_names_are_listed_once_and_all_import():
    import crossmodal

    assert crossmodal.__all__ == sorted(crossmodal._EXPORTS)
    for name in crossmodal.__all__:
        assert getattr(crossmodal, name) is not None
    source = (ROOT / "crossmodal" / "__init__.py").read_text()
    checked = set(re.findall(r"^\s+(\w+),?$", source.split("if TYPE_CHECKING:")[1], re.M))
    checked |= {
        n.strip()
        for line in re.findall(r"import ([\w, ]+)$", source, re.M)
        for n in line.split(",")
    }
    assert set(crossmodal.__all__) <= checked  # every public name has a type for mypy


@pytest.mark.slow
def test_make_demo_with_no_arguments_runs_offline_and_the_demo_answers(tmp_path):
    from test_demo_browser import free_port

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CROSSMODAL_MODEL": ""}
    demo = subprocess.Popen(
        [
            "make",
            "-s",
            "demo",
            f"VENV={Path(sys.prefix)}",
            f"DB={tmp_path / 'db'}",
            f"SAMPLE={tmp_path / 'sample'}",
            f"PORT={port}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        assert demo.poll() is None, demo.stdout.read() if demo.stdout else ""
        from gradio_client import Client

        # not downloading the gallery: gradio_client leaves an empty folder per file in /tmp
        client = Client(url, verbose=False, download_files=False)
        api = json.dumps(client.view_api(return_format="dict", print_info=False))
        assert "search_text" in api
        # the query, three (text, weight) extra terms, then k, min score, folder, dates, page
        args = ["a red circle", "", 0.5, "", -0.5, "", 0.0, 24, 0, "", "", "", 1]
        gallery, summary, *_ = client.predict(*args, api_name="/search_text")
        assert re.match(r"\d+ photos? for `\"a red circle\"`", summary), summary
        assert "red-circle" in gallery[0]["caption"]
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=30)
