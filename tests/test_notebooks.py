"""The notebooks in notebooks/ run top to bottom offline, draw figures, and are committed clean.

They are committed without outputs; this test executes each one in a fresh kernel of the
Python running the tests, so a notebook broken by a library change fails CI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the dev extra")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the dev extra")
pytest.importorskip("ipykernel", reason="notebook tests need the dev extra")
pytest.importorskip("matplotlib", reason="notebook tests need the dev extra")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
KERNEL = "crossmodal-test"


def test_the_three_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_geometry.ipynb",
        "03_evaluate.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert dirty == [], (
        f"cells {dirty} of {path.name} hold outputs; clear them before committing "
        f"(jupyter nbconvert --clear-output --inplace {path.relative_to(NOTEBOOK_DIR.parent)})"
    )


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel spec that runs this very interpreter (not whatever `python` is on PATH), with
    the inline backend so figures come back as PNG outputs without a display. The notebooks'
    own working folders (`tempfile.mkdtemp`) go under pytest's temporary folder, which pytest
    prunes, rather than into /tmp, where each run would leave about 60 MB behind."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    scratch = root / "tmp"
    scratch.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "crossmodal tests",
                "language": "python",
                "env": {
                    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                    "TMPDIR": str(scratch),
                },
            }
        )
    )
    return root


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_offline_and_draws_figures(
    path: Path, kernel_dir: Path, tmp_path: Path
) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    notebook = nbformat.read(path, as_version=4)
    manager = KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    )
    client = nbclient.NotebookClient(
        notebook,
        km=manager,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    scratch = kernel_dir / "tmp"
    before = set(scratch.iterdir())
    client.execute()  # raises CellExecutionError, with the failing cell's traceback, on any error
    made = {p for p in set(scratch.iterdir()) - before if p.name.startswith("crossmodal-")}
    assert len(made) == 1, made  # the notebook's working folder went where it was told

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code_cells)
    errors = [out for cell in code_cells for out in cell.outputs if out.output_type == "error"]
    assert errors == []
    figures = [
        out.data["image/png"]
        for cell in code_cells
        for out in cell.outputs
        if out.output_type == "display_data" and "image/png" in out.get("data", {})
    ]
    assert len(figures) >= 3, f"{path.name} drew {len(figures)} figures"
    assert all(len(png) > 10_000 for png in figures), "a figure is (nearly) empty"
