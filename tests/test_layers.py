"""The package's imports point down the flow only, with no cycles:
media -> model -> store -> indexing / search / evaluate -> cli, as STYLE.md and LAYOUT.md
describe. The folders of `crossmodal/` are these levels."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "crossmodal"

# a module may import modules of its own level or below, never above
LEVELS = {
    "errors": 0,
    "media": 1,  # files, images, captions
    "model": 2,  # specs, encoder, training
    "store": 3,  # records, filters, lock, where, tables, upkeep, database
    "indexing": 4,  # pipeline, folders
    "search": 4,  # query, labels, searcher, classification, duplicates
    "evaluate": 4,  # evaluation, synthetic
    "cli": 5,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("crossmodal")}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("crossmodal")
        ):
            found.add(str(node.module))
    return found


def level(module: str) -> int:
    return LEVELS[module.split(".")[1]]


def graph() -> dict[str, set[str]]:
    edges = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name in ("crossmodal", "crossmodal.__main__"):
            continue  # the public names and `python -m`: above everything by design
        edges[name] = imports_of(path) - {name}
    return edges


def test_every_module_has_a_level():
    assert {name.split(".")[1] for name in graph()} == set(LEVELS)


def test_imports_point_down_the_flow():
    upward = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        for target in targets
        if target != "crossmodal" and level(target) > level(name)
    ]
    assert upward == []
    assert not [n for n, targets in graph().items() if "crossmodal" in targets]


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_only_the_model_modules_import_torch_and_open_clip():
    heavy = {"torch", "open_clip", "torchvision"}
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in heavy for n in names):
                importers.add(str(path.relative_to(PACKAGE)))
    assert importers == {
        "model/encoder.py",
        "model/training.py",
        "model/text_export.py",
        "model/image_export.py",
        "model/vit_rewrites.py",
        "model/jpeg_decode.py",
    }


def test_the_text_search_path_needs_no_torch():
    """What a text search loads when the model's text tower is exported: no torch, no open_clip
    (imported in a fresh interpreter, where nothing else has pulled them in)."""
    code = (
        "import sys\n"
        "import crossmodal.cli.searching, crossmodal.model.text_onnx, crossmodal.search\n"
        "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_no_gradio_click_rich_or_tqdm_below_the_cli():
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "cli":
            continue
        text = path.read_text()
        for name in ("gradio", "click", "rich", "tqdm"):
            assert f"import {name}" not in text and f"from {name}" not in text, (path, name)
