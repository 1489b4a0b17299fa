"""`crossmodal eval` and `crossmodal finetune` through click, offline, on tiny generated sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from crossmodal.cli.training import group
from crossmodal.evaluate.synthetic import Scene, write_captioned_set, write_class_folders
from crossmodal.model.specs import SHIPPED_MODEL_DIR

pytest.importorskip("torch")

SCENES = [
    Scene("circle", "red", "left", "white"),
    Scene("square", "blue", "right", "black"),
    Scene("star", "yellow", "top", "gray"),
]


@pytest.fixture(scope="module")
def captions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("set")
    write_captioned_set(folder, SCENES, per_scene=2, seed=3)
    return folder / "captions.csv"


def test_eval_prints_json_with_recall_compression_and_zero_shot(
    captions: Path, tmp_path: Path
) -> None:
    write_class_folders(tmp_path / "classes", "colour", per_class=2, seed=1)
    result = CliRunner().invoke(
        group,
        [
            "eval",
            str(captions),
            "--model",
            str(SHIPPED_MODEL_DIR),
            "--device",
            "cpu",
            "--match",
            "label",
            "--compression",
            "--dims",
            "64,4",
            "--classes",
            str(tmp_path / "classes"),
            "--template",
            "a {} shape",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["retrieval"]["images"] == 6
    assert report["retrieval"]["text_to_image"]["R@1"] == 1.0
    assert [(r["dim"], r["precision"]) for r in report["compression"]] == [
        (64, "fp32"),
        (64, "fp16"),
        (4, "fp32"),
        (4, "fp16"),
    ]
    assert report["zero_shot"]["classes"] == ["blue", "green", "orange", "purple", "red", "yellow"]


def test_eval_prints_tables(captions: Path) -> None:
    result = CliRunner().invoke(
        group, ["eval", str(captions), "--model", str(SHIPPED_MODEL_DIR), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "text → image" in result.stdout and "R@10" in result.stdout


def test_eval_turns_a_bad_captions_file_into_a_message(tmp_path: Path) -> None:
    (tmp_path / "caps.csv").write_text("name,words\nx.png,hello\n")
    result = CliRunner().invoke(
        group, ["eval", str(tmp_path / "caps.csv"), "--model", str(SHIPPED_MODEL_DIR)]
    )
    assert result.exit_code == 1
    assert "no image and caption columns" in result.stderr


@pytest.mark.parametrize("extra", [(), ("--cpu-bf16",)])
def test_finetune_from_scratch_writes_a_model_eval_can_load(
    captions: Path, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    architecture = {
        "embed_dim": 8,
        "vision_cfg": {
            "image_size": 32,
            "patch_size": 16,
            "width": 16,
            "layers": 1,
            "head_width": 8,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 8,
            "heads": 1,
            "layers": 1,
        },
    }
    (tmp_path / "arch.json").write_text(json.dumps({"model_cfg": architecture}))
    runner = CliRunner()
    result = runner.invoke(
        group,
        [
            "finetune",
            str(captions),
            "-o",
            str(tmp_path / "model"),
            "--from-scratch",
            str(tmp_path / "arch.json"),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--json",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 2
    written = json.loads((tmp_path / "model" / "finetune_config.json").read_text())
    assert written["cpu_bf16"] is bool(extra)
    result = runner.invoke(
        group, ["eval", str(captions), "--model", str(tmp_path / "model"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"]["dim"] == 8


def test_finetune_refuses_model_and_scratch_together(captions: Path, tmp_path: Path) -> None:
    (tmp_path / "arch.json").write_text("{}")
    result = CliRunner().invoke(
        group,
        [
            "finetune",
            str(captions),
            "-o",
            str(tmp_path / "m"),
            "--model",
            "x:y",
            "--from-scratch",
            str(tmp_path / "arch.json"),
        ],
    )
    assert result.exit_code == 2
    assert "not both" in result.output


def test_finetune_pairs_by_label_and_refuses_a_set_without_labels(
    captions: Path, tmp_path: Path
) -> None:
    def finetune(path: Path, out: str):
        return CliRunner().invoke(
            group,
            [
                "finetune",
                str(path),
                "-o",
                str(tmp_path / out),
                "--images",
                str(captions.parent),
                "--model",
                str(SHIPPED_MODEL_DIR),
                "--pairs",
                "label",
                "--steps",
                "1",
                "--batch-size",
                "4",
                "--warmup",
                "1",
                "--device",
                "cpu",
                "--json",
            ],
        )

    result = finetune(captions, "by-label")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 1
    unlabelled = tmp_path / "unlabelled.csv"
    rows = captions.read_text().splitlines()
    unlabelled.write_text("\n".join(",".join(row.split(",")[:2]) for row in rows) + "\n")
    result = finetune(unlabelled, "none")
    assert result.exit_code == 1
    assert "needs a label for every image" in result.stderr
    assert not (tmp_path / "none").exists()
