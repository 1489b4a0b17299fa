"""The shipped shapes-tiny model understands its domain on renderings it has never seen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossmodal.evaluate.synthetic import all_scenes, novel_scenes, write_captioned_set
from crossmodal.media.captions import read_captions
from crossmodal.model.specs import SHIPPED_MODEL_DIR

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def encoder():
    from crossmodal.model.encoder import EncoderConfig, load_encoder

    return load_encoder(str(SHIPPED_MODEL_DIR), EncoderConfig(device="cpu", precision="fp32"))


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The held-out split exactly as `write_shapes_dataset(seed=0)` renders it for eval.json:
    two new renderings of each training combination, never seen in training."""
    novel = set(novel_scenes())
    seen = [s for s in all_scenes() if s not in novel]
    folder = tmp_path_factory.mktemp("heldout")
    write_captioned_set(folder, seen, per_scene=2, seed=1, name="heldout.csv")
    return folder / "heldout.csv"


def test_shipped_model_is_small_and_in_open_clip_format() -> None:
    weights = SHIPPED_MODEL_DIR / "open_clip_model.safetensors"
    assert (SHIPPED_MODEL_DIR / "open_clip_config.json").is_file()
    assert weights.stat().st_size < 5_000_000


@pytest.fixture(scope="module")
def heldout_report(encoder, heldout):
    from crossmodal.evaluate.evaluation import encode_captioned_set, retrieval_report

    encoded = encode_captioned_set(encoder, read_captions(heldout), match="label")
    return encoded, retrieval_report(encoded, match="label")


def test_shipped_model_passes_the_issue_recall_bar(heldout_report) -> None:
    _, report = heldout_report
    # 348 combinations, two renderings each: chance Recall@1 is 1/348 = 0.003
    assert report.text_to_image.at(1) >= 0.9  # the issue's bar; measured 1.000
    assert report.image_to_text.at(1) >= 0.9  # measured 0.994 (orange and yellow swapped)
    assert report.image_to_text.at(5) >= 0.99


def test_shipped_model_gets_every_attribute_right(heldout_report) -> None:
    encoded, _ = heldout_report
    top = (encoded.text_vectors @ encoded.image_vectors.T).argmax(axis=1)
    wanted = [str(key).split("-") for key in encoded.text_keys]
    found = [str(encoded.image_keys[i]).split("-") for i in top]
    accuracy = [
        np.mean([w[a] == f[a] for w, f in zip(wanted, found, strict=True)]) for a in range(4)
    ]
    assert min(accuracy) >= 0.95, accuracy  # colour, shape, position, background; measured 1.0


def test_eval_report_beside_the_model_matches_the_model(heldout_report) -> None:
    figures = json.loads((SHIPPED_MODEL_DIR / "eval.json").read_text())
    assert figures["heldout"]["match"] == "label"
    assert figures["heldout"]["images"] == 696
    assert figures["heldout"]["text_to_image"]["R@1"] >= 0.9  # the issue's bar
    assert (
        figures["weights_bytes"]
        == (SHIPPED_MODEL_DIR / "open_clip_model.safetensors").stat().st_size
    )
    # the recorded figures are the model's: re-measured, each within a rendering's worth
    measured = heldout_report[1].to_dict()
    for direction in ("text_to_image", "image_to_text"):
        for k in ("R@1", "R@5", "R@10"):
            assert measured[direction][k] >= 0.9
            recorded = figures["heldout"][direction][k]
            assert abs(measured[direction][k] - recorded) <= 2 / 696, (direction, k)


def test_a_red_circle_finds_red_things_and_a_red_circle_first(encoder, heldout) -> None:
    from PIL import Image

    dataset = read_captions(heldout)
    images = [Image.open(item.path).convert("RGB") for item in dataset.items]
    scores = encoder.encode_images(images) @ encoder.encode_texts(["a red circle"])[0]
    top = [dataset.items[i].label.split("-") for i in scores.argsort()[::-1][:10]]
    assert all(label[0] == "red" for label in top)
    assert top[0][:2] == ["red", "circle"]
