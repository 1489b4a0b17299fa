"""The shipped shapes-tiny model understands its domain on renderings it has never seen."""

from __future__ import annotations

import json
from dataclasses import replace
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
    assert weights.stat().st_size <= 10_000_000  # the issue's bound


@pytest.fixture(scope="module")
def heldout_report(encoder, heldout):
    from crossmodal.evaluate.evaluation import encode_captioned_set, retrieval_report

    encoded = encode_captioned_set(encoder, read_captions(heldout), match="label")
    return encoded, retrieval_report(encoded, match="label")


def test_shipped_model_passes_the_issue_recall_bar(heldout_report) -> None:
    _, report = heldout_report
    # 348 combinations, two renderings each: chance Recall@1 is 1/348 = 0.003
    assert report.text_to_image.at(1) >= 0.9  # the issue's bar; measured 1.000
    assert report.image_to_text.at(1) >= 0.9  # measured 1.000
    assert report.image_to_text.at(5) >= 0.99


def test_the_first_shipped_models_figures_do_not_fall(heldout_report) -> None:
    """The first model shipped, trained on the generator's one look only, recorded text -> image
    R@1 1.000 and image -> text 0.994 on this split; learning other drawings must not cost that
    (the model before this one fell to 0.980 and 0.963). One rendering's worth of slack."""
    _, report = heldout_report
    assert report.text_to_image.at(1) >= 1.000 - 1 / 696
    assert report.image_to_text.at(1) >= 0.994 - 1 / 696


def test_novel_combinations_stay_found(encoder, tmp_path: Path) -> None:
    """The 12 combinations held out of training, rendered as eval.json's "novel" split is
    (seed 2, 4 each): the first shipped model found every one both ways, and so does this."""
    from crossmodal.evaluate.evaluation import encode_captioned_set, retrieval_report

    write_captioned_set(tmp_path, sorted(novel_scenes()), per_scene=4, seed=2, name="novel.csv")
    encoded = encode_captioned_set(encoder, read_captions(tmp_path / "novel.csv"), match="label")
    report = retrieval_report(encoded, match="label")
    assert (report.text_to_image.at(1), report.image_to_text.at(1)) == (1.0, 1.0)
    recorded = json.loads((SHIPPED_MODEL_DIR / "eval.json").read_text())["novel"]
    for direction in ("text_to_image", "image_to_text"):
        assert report.to_dict()[direction] == recorded[direction]


def test_the_recipe_fits_the_issues_budget() -> None:
    """What eval.json records of the run that made the weights: from scratch on two CPU cores,
    data and training in at most 15 minutes, with the recipe the script holds now (so the
    record and the script cannot drift apart)."""
    import sys
    from dataclasses import asdict

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from train_shipped_model import ARCHITECTURE, DATA, STAGES

    figures = json.loads((SHIPPED_MODEL_DIR / "eval.json").read_text())
    assert figures["machine"].startswith("x86_64, 2 CPU cores")
    assert figures["data_and_training_seconds"] <= 15 * 60
    recipe = figures["recipe"]
    assert recipe["pairs"] == "crossmodal.evaluate.shape_captions.caption_fits"
    assert recipe["stages"] == [asdict(stage) for stage in STAGES]
    assert recipe["architecture"] == ARCHITECTURE
    assert {k: recipe["data"][k] for k in DATA} == DATA
    assert [run["steps"] for run in figures["training"]] == [s.max_steps for s in STAGES]


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


SYNONYMS = {"red": "crimson", "green": "emerald", "blue": "navy", "yellow": "golden",
            "purple": "violet", "orange": "amber"}  # fmt: skip


def _with_synonyms(dataset):
    from crossmodal.media.captions import CaptionedSet

    def reword(caption: str) -> str:
        return " ".join(SYNONYMS.get(word, word) for word in caption.split())

    items = tuple(
        replace(item, captions=tuple(map(reword, item.captions))) for item in dataset.items
    )
    return CaptionedSet(items=items, source=dataset.source)


def test_the_fine_tuning_story_of_notebook_03_holds(tmp_path: Path) -> None:
    """notebooks/03_evaluate's last section, at its settings: a 60-step fine-tune of the text
    tower learns colour words the shipped model never saw, and keeps the ones it knew."""
    from crossmodal.evaluate.evaluation import evaluate_retrieval
    from crossmodal.evaluate.synthetic import write_shapes_dataset
    from crossmodal.model.encoder import EncoderConfig, load_encoder, model_config_of
    from crossmodal.model.training import FinetuneConfig, finetune

    splits = write_shapes_dataset(
        tmp_path / "shapes", seed=0, train_per_scene=1, heldout_per_scene=1, novel_per_scene=2
    )
    heldout = read_captions(splits.heldout)
    heldout_new = _with_synonyms(heldout)
    student = load_encoder(str(SHIPPED_MODEL_DIR), EncoderConfig(device="cpu", precision="fp32"))

    def measure() -> tuple[float, float]:
        return tuple(  # type: ignore[return-value]
            evaluate_retrieval(student, data, match="label").text_to_image.at(1)
            for data in (heldout_new, heldout)
        )

    new_before, old_before = measure()
    finetune(
        student,
        _with_synonyms(read_captions(splits.train)),
        tmp_path / "finetuned",
        model_config_of(str(SHIPPED_MODEL_DIR)),
        FinetuneConfig(
            epochs=0, max_steps=60, batch_size=64, lr=2e-3, warmup_steps=5, freeze_image=True
        ),
    )
    new_after, old_after = measure()
    assert new_before <= 0.25, "the new words were already known: nothing to teach"
    assert new_after >= new_before + 0.3, (new_before, new_after)
    assert old_after >= old_before - 0.1, (old_before, old_after)
