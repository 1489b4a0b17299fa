"""A text search without torch: the exported text tower, its identity checks, and the digest cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_in_fresh_process

from crossmodal.errors import ModelLoadError
from crossmodal.model import cache
from crossmodal.model.text_onnx import OnnxTextEncoder, export_folder, open_text_export

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

TEXTS = [
    "a red circle",
    "A DOG on the beach at night",
    "",
    "caf\u00e9 " * 40,
    "2024-06-01 \U0001f303",
]


@pytest.fixture(scope="module")
def clip(tiny_model_dir: Path):
    from crossmodal.model.encoder import EncoderConfig, load_encoder

    return load_encoder(str(tiny_model_dir), EncoderConfig("cpu", "fp32"))


@pytest.fixture(scope="module")
def exported(clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crossmodal.model.text_export import export_text_encoder

    return export_text_encoder(clip, tmp_path_factory.mktemp("exports"))


def _old(path: Path) -> Path:
    """Backdate a file past the window in which a rewrite could keep its timestamps."""
    os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    return path


def test_a_digest_is_remembered_until_the_file_changes(tmp_path: Path, monkeypatch) -> None:
    hashed: list[Path] = []
    real = cache._hash
    monkeypatch.setattr(cache, "_hash", lambda path: hashed.append(path) or real(path))
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"a" * 1000)
    _old(weights)
    first = cache.file_digest(weights)
    assert cache.file_digest(weights) == first and len(hashed) == 1  # the second is not read
    weights.write_bytes(b"b" * 1000)  # same size, new content
    _old(weights)  # even with the old timestamps: the change time moved
    assert cache.file_digest(weights) != first and len(hashed) == 2


def test_a_file_written_just_now_is_hashed_every_time(tmp_path: Path, monkeypatch) -> None:
    hashed: list[Path] = []
    real = cache._hash
    monkeypatch.setattr(cache, "_hash", lambda path: hashed.append(path) or real(path))
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"x")
    cache.file_digest(fresh)
    cache.file_digest(fresh)
    assert len(hashed) == 2  # a same-size rewrite within the clock's tick would look unchanged


def test_the_export_gives_torch_vectors(clip, exported: Path) -> None:
    onnx = OnnxTextEncoder.open(exported, clip.identity)
    cosine = (onnx.encode_texts(TEXTS) * clip.encode_texts(TEXTS)).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine
    assert onnx.encode_texts([]).shape == (0, clip.dim)
    manifest = json.loads((exported / "export.json").read_text())
    assert manifest["identity"]["fingerprint"] == clip.identity.fingerprint
    assert manifest["min_cosine_to_torch"] >= 0.9999
    assert onnx.logit_scale == pytest.approx(clip.logit_scale)
    with pytest.raises(ModelLoadError, match="text tower only"):
        onnx.encode_images([])


def test_an_export_of_other_weights_is_refused(clip, exported: Path, tmp_path: Path) -> None:
    from crossmodal.model.specs import ModelIdentity

    other = ModelIdentity(clip.identity.spec, "local@sha256:0000", clip.dim, "x")
    with pytest.raises(ModelLoadError, match="was made from"):
        OnnxTextEncoder.open(exported, other)


def test_the_export_follows_the_weights_it_was_made_from(
    clip, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from conftest import TINY_CONFIG

    from crossmodal.model.encoder import create_model_from_config, save_model_dir
    from crossmodal.model.text_export import ensure_text_export

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    root = tmp_path / "exports"
    assert open_text_export(str(model), root) is None  # nothing exported yet
    assert ensure_text_export(clip, root) == export_folder(clip.identity.fingerprint, root)
    found = open_text_export(str(model), root)
    assert found is not None and found.identity.compatible_with(clip.identity)
    save_model_dir(create_model_from_config(TINY_CONFIG, seed=9), TINY_CONFIG, model)
    assert open_text_export(str(model), root) is None  # new weights: the old export is not used


def test_the_export_keeps_its_weights_beside_an_optimised_graph(exported: Path) -> None:
    from crossmodal.model.text_onnx import GRAPH_FILE, WEIGHTS_FILE

    files = sorted(p.name for p in exported.iterdir())
    assert files == sorted(
        ["export.json", GRAPH_FILE, WEIGHTS_FILE, "bpe_simple_vocab_16e6.txt.gz"]
    )
    assert (exported / WEIGHTS_FILE).stat().st_size > (exported / GRAPH_FILE).stat().st_size


def test_an_export_in_an_older_format_is_made_again(clip, tmp_path: Path) -> None:
    from crossmodal.model import text_export

    root = tmp_path / "exports"
    folder = text_export.ensure_text_export(clip, root)
    assert folder is not None
    manifest = json.loads((folder / "export.json").read_text())
    (folder / "export.json").write_text(json.dumps({**manifest, "format": 1}))
    with pytest.raises(ModelLoadError, match="older format"):
        OnnxTextEncoder.open(folder, clip.identity)
    assert not text_export.has_text_export(clip, root)
    assert text_export.ensure_text_export(clip, root) == folder  # made again, in place
    assert OnnxTextEncoder.open(folder, clip.identity).dim == clip.dim


def test_an_export_missing_its_weights_is_refused(clip, tmp_path: Path) -> None:
    from crossmodal.model import text_export
    from crossmodal.model.text_onnx import WEIGHTS_FILE

    folder = text_export.ensure_text_export(clip, tmp_path / "exports")
    assert folder is not None
    (folder / WEIGHTS_FILE).unlink()  # the search then loads the torch model, with a warning
    with pytest.raises(ModelLoadError, match="cannot open the export"):
        OnnxTextEncoder.open(folder, clip.identity)


def test_an_export_the_tracer_fails_on_is_marked_and_tried_once(
    clip, tmp_path: Path, monkeypatch
) -> None:
    import torch

    from crossmodal.model import text_export

    calls: list[int] = []

    def fail(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise RuntimeError("Exporting the operator 'aten::something' to ONNX is not supported")

    monkeypatch.setattr(torch.onnx, "export", fail)
    assert text_export.ensure_text_export(clip, tmp_path) is None
    assert text_export.ensure_text_export(clip, tmp_path) is None
    assert calls == [1] and text_export.has_text_export(clip, tmp_path)
    assert not list(tmp_path.glob(".export-*"))  # no staging folder left behind


def test_a_model_that_cannot_be_exported_is_tried_once(clip, tmp_path: Path, monkeypatch) -> None:
    from crossmodal.model import text_export

    calls: list[int] = []

    def refuse(encoder):  # as for a model with a Hugging Face tokenizer
        calls.append(1)
        raise ModelLoadError("uses a HFTokenizer")

    monkeypatch.setattr(text_export, "_tokenizer_config", refuse)
    assert text_export.ensure_text_export(clip, tmp_path) is None
    assert text_export.ensure_text_export(clip, tmp_path) is None
    assert calls == [1] and text_export.has_text_export(clip, tmp_path)


def test_a_text_search_after_indexing_imports_no_torch(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from conftest import make_image

    photos = tmp_path / "photos"
    for index, colour in enumerate(["red", "green", "blue", "yellow", "white", "black"]):
        make_image(photos / f"{index}-{colour}.png", colour)
    db = str(tmp_path / "db")
    cache_root = {"CROSSMODAL_CACHE": str(tmp_path / "cache")}
    indexed = cli_in_fresh_process(
        "index", str(photos), "--db", db, "--model", str(tiny_model_dir), env=cache_root
    )
    assert indexed.returncode == 0, indexed.stderr
    assert list((tmp_path / "cache" / "text-encoders").glob("*/export.json"))  # made by index

    for extra in ((), ("--hybrid", "--folder", str(photos), "--type", "png")):
        fast = cli_in_fresh_process(
            "search", "a red photo", "--db", db, "--json", *extra, env=cache_root
        )
        assert fast.returncode == 0, fast.stderr
        # and run as without pandas (crossmodal.store.importing.leave_out_pandas)
        assert "torch imported: False pandas imported: False" in fast.stderr
        slow = cli_in_fresh_process(
            "search",
            "a red photo",
            "--db",
            db,
            "--json",
            *extra,
            "--precision",
            "fp32",  # the export is float32: compare like with like
            env={**cache_root, "CROSSMODAL_NO_ONNX": "1"},
        )
        assert slow.returncode == 0 and "torch imported: True" in slow.stderr, slow.stderr
        fast_hits, slow_hits = json.loads(fast.stdout), json.loads(slow.stdout)
        assert len(fast_hits) == 6 and [h["path"] for h in fast_hits] == [
            h["path"] for h in slow_hits
        ]
        assert np.allclose(
            [h["score"] for h in fast_hits], [h["score"] for h in slow_hits], atol=2e-4
        )


def test_a_search_against_another_models_table_is_still_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from conftest import make_image

    make_image(tmp_path / "photos" / "red.png", "red")
    db = str(tmp_path / "db")
    cache_root = {"CROSSMODAL_CACHE": str(tmp_path / "cache")}
    assert (
        cli_in_fresh_process(
            "index",
            str(tmp_path / "photos"),
            "--db",
            db,
            "--model",
            str(tiny_model_dir),
            env=cache_root,
        ).returncode
        == 0
    )
    refused = cli_in_fresh_process(
        "search", "red", "--db", db, "--model", "shapes-tiny", env=cache_root
    )
    assert refused.returncode == 1
    assert "was built with model" in refused.stderr and "Fix:" in refused.stderr


def test_an_unwritable_cache_costs_speed_not_the_search(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from conftest import make_image

    make_image(tmp_path / "photos" / "red.png", "red")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    env = {"CROSSMODAL_CACHE": str(blocked)}
    db = str(tmp_path / "db")
    indexed = cli_in_fresh_process(
        "index", str(tmp_path / "photos"), "--db", db, "--model", str(tiny_model_dir), env=env
    )
    assert indexed.returncode == 0, indexed.stderr
    searched = cli_in_fresh_process("search", "red", "--db", db, "--json", env=env)
    assert searched.returncode == 0, searched.stderr
    assert [hit["name"] for hit in json.loads(searched.stdout)] == ["red.png"]
    assert "could not save the fast text encoder" in searched.stderr
    assert "CROSSMODAL_CACHE" in searched.stderr
