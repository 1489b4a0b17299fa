"""The shipped shapes-tiny model understands its domain on renderings it has never seen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossmodal.captions import read_captions
from crossmodal.synthetic import SHIPPED_MODEL_DIR, all_scenes, novel_scenes, write_captioned_set

pytest.importorskip("torch")

FRESH_SEED = 20240  # not a seed the training script renders with


@pytest.fixture(scope="module")
def encoder():
    from crossmodal.encoder import EncoderConfig, load_encoder

    return load_encoder(str(SHIPPED_MODEL_DIR), EncoderConfig(device="cpu", precision="fp32"))


@pytest.fixture(scope="module")
def fresh_heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    novel = set(novel_scenes())
    seen = [s for s in all_scenes() if s not in novel]
    folder = tmp_path_factory.mktemp("fresh")
    write_captioned_set(folder, seen, per_scene=1, seed=FRESH_SEED)
    return folder / "captions.csv"


def test_shipped_model_is_small_and_in_open_clip_format() -> None:
    weights = SHIPPED_MODEL_DIR / "open_clip_model.safetensors"
    assert (SHIPPED_MODEL_DIR / "open_clip_config.json").is_file()
    assert weights.stat().st_size < 5_000_000


def test_shipped_model_passes_the_recall_bar_on_fresh_renderings(encoder, fresh_heldout) -> None:
    from crossmodal.evaluation import evaluate_retrieval

    report = evaluate_retrieval(encoder, read_captions(fresh_heldout), match="label")
    assert report.text_to_image.at(1) >= 0.9
    # one relevant image in 348 is chance (0.003); clearly above it means most are found
    assert report.image_to_text.at(1) >= 0.5
    assert report.image_to_text.at(1) > 50 * report.image_to_text.chance_r1


def test_eval_report_beside_the_model_records_the_bar() -> None:
    figures = json.loads((SHIPPED_MODEL_DIR / "eval.json").read_text())
    assert figures["heldout"]["match"] == "label"
    assert figures["heldout"]["text_to_image"]["R@1"] >= 0.9


def test_a_red_circle_finds_red_circles(encoder, fresh_heldout) -> None:
    from PIL import Image

    dataset = read_captions(fresh_heldout)
    images = [Image.open(item.path).convert("RGB") for item in dataset.items]
    scores = encoder.encode_images(images) @ encoder.encode_texts(["a red circle"])[0]
    top = scores.argsort()[::-1][:10]
    assert [dataset.items[i].label.split("-")[:2] for i in top] == [["red", "circle"]] * 10
