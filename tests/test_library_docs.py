"""docs/library.md is a test: its python blocks run, in order, as one script, offline.

The blocks are read from the document itself (never re-typed here), joined in order, and run
as a plain script in a new process in an empty folder, with the shipped model on the sample
folder; what they print is checked for the outcomes that could go wrong. The document covers
each capability of the library, one section and one block each.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "docs" / "library.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str | None = None) -> list[str]:
    return BLOCK.findall(LIBRARY.read_text() if text is None else text)


def test_the_library_guide_runs_as_one_script_and_prints_what_it_promises(tmp_path):
    script = tmp_path / "library_guide.py"
    script.write_text("\n".join(python_blocks()))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    lines = out.replace("\r", "\n").splitlines()

    # indexing, then re-indexing only what changed, with the failure reported
    assert "48 new, 0 unchanged, 0 failed" in lines
    assert "2 new, 1 moved, 47 unchanged, 0 removed, 1 failed, 2 encoded" in lines
    assert any(line.startswith("failed: broken.jpg - ") for line in lines)
    # text, image and "more like this" search
    assert re.search(r"^0\.\d{3} \d{3}-red-circle-\S+ 64x64 PNG$", out, re.M)
    assert any(line.startswith("rotated: ['039-blue-circle-left-black.png'") for line in lines)
    # the copy (upscaled, JPEG): all but identical, not the photo itself
    assert re.search(r"^(0\.99\d|1\.000) big-red-circle\.jpg$", out, re.M)
    # filters, hybrid search and the explanations of empty results
    assert "orientation landscape: ['wide-blue-square.png']" in lines
    assert (
        "after 2019-07-01, before 2019-08-01: ['big-red-circle.jpg', 'wide-blue-square.png']"
        in lines
    )
    assert "hybrid: 3 of the top 6 are in Holidays" in lines
    assert any(line.startswith("no indexed photo is in a folder 'Work'") for line in lines)
    assert (
        "no photo matches all of: folder Holidays, min width 100, orientation landscape "
        "(each one alone matches some)"
    ) in lines
    assert any(line.startswith("only 50 photo(s) match") for line in lines)
    # image -> text: classification, captions, labelling the whole index
    assert re.search(r"^\d+% a red circle$", out, re.M)
    assert any(line.startswith("typed labels: a circle (") for line in lines)
    assert re.search(r"^0\.\d{3} a blue square in the center on a white background$", out, re.M)
    assert "again: 0 labelled, 50 already labelled" in lines
    # duplicates: the copy with more pixels is the one to keep
    assert re.search(
        r"^1\.000 keep wide-blue-square\.png, drop \['003-blue-square-center-white\.png'\]$",
        out,
        re.M,
    )
    # evaluation, fine-tuning, and the errors with their Fix: lines
    assert re.search(r"^text->image: R@1 (0\.9\d|1\.00), R@5 ", out, re.M)
    assert any(line.startswith("5 steps in ") for line in lines)
    assert "ModelMismatchError: table built by 'shapes-tiny'" in lines
    assert any(line.startswith("Fix: search with the table's model") for line in lines)
    for what, error in (
        ("file type", "FilterError"),
        ("date", "FilterError"),
        ("query", "QuerySyntaxError"),
        ("sql", "StoreError"),
        ("table", "TableNotFoundError"),
        ("database", "StoreError"),
    ):
        assert any(line.startswith(f"{what}: {error}: ") for line in lines), what
    assert len([line for line in lines if line.startswith("    Fix: ")]) == 3


def test_the_guide_has_a_block_per_capability_and_names_the_main_calls():
    text = LIBRARY.read_text()
    assert len(python_blocks(text)) >= 12
    for name in (
        "Searcher.search",
        "explain_empty",
        "Filters",
        "classify",
        "captions",
        "label_index",
        "find_duplicates",
        "finetune",
        "evaluate_retrieval",
    ):
        assert name in text, name
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    for section in sections:  # each capability: prose first, then exactly one example
        title = section.splitlines()[0]
        assert len(python_blocks(section)) == 1, title
        assert not section.split("\n", 1)[1].lstrip().startswith("```"), title
