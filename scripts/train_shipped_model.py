"""Rerun the shipped model's recipe: synthetic shapes data, a tiny CLIP from scratch, evaluation.

    python scripts/train_shipped_model.py            # writes crossmodal/assets/shapes-tiny/
    python scripts/train_shipped_model.py --out DIR  # anywhere else

Deterministic given --seed and --threads on CPU; about 12.5 minutes on two CPU cores. Most of
the training images are drawn and captioned with variety (`train_variety`); the loss counts
every caption of a batch as a pair of every image it describes (`caption_fits`), not only of its
own. The model is then measured on held-out renderings, novel combinations, and the
robustness suite of tests/robustness.py: shapes drawn by a second, independently written
renderer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from crossmodal.evaluate.evaluation import compression_study, encode_captioned_set, retrieval_report
from crossmodal.evaluate.shape_captions import caption_fits
from crossmodal.evaluate.synthetic import ShapesSplits, write_shapes_dataset
from crossmodal.media.captions import CaptionedSet, read_captions
from crossmodal.model.encoder import EncoderConfig, create_encoder_from_config, load_encoder
from crossmodal.model.specs import SHIPPED_MODEL_DIR
from crossmodal.model.training import FinetuneConfig, TrainStep, finetune

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from robustness import measure_suite  # noqa: E402  (a test helper: the second renderer)

# A small convolutional image tower (open_clip's ModifiedResNet, chosen by a list of `layers`) on
# the full 64 px renderings: convolutions learn shape within a few hundred steps, and the attention
# pool's positional embedding over the final 2 x 2 grid keeps position. A stem of 16 channels
# leaves room for outlines, blur and textures. A narrow text tower keeps the 49408-token
# embedding table (over half the size) small.
ARCHITECTURE = {
    "embed_dim": 64,
    "init_logit_scale": 3.4012,  # ln(30)
    "vision_cfg": {
        "image_size": 64,
        "layers": [1, 1, 1, 1],  # one bottleneck per stage; 64 px -> 2 x 2 features
        "width": 16,  # stem width; the last stage has 32 x 16 = 512 channels
        "head_width": 16,  # attention-pool heads of 16 dims
    },
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
}
DATA = {"train_per_scene": 40, "train_variety": 0.75}  # 13,920 training images, 3 in 4 varied
STAGES = (
    FinetuneConfig(
        epochs=0,
        max_steps=4000,
        batch_size=128,
        lr=3e-3,
        warmup_steps=100,
        weight_decay=0.05,
        seed=0,
        half_weights=True,
        cpu_bf16=True,
    ),
)


def report(step: TrainStep) -> None:
    if step.step % 250 == 0 or step.step == step.total_steps:
        print(
            f"step {step.step}/{step.total_steps} epoch {step.epoch} loss {step.loss:.4f} "
            f"lr {step.lr:.2e}",
            flush=True,
        )


def train(train_set: CaptionedSet, out: Path, seed: int) -> list[dict[str, Any]]:
    """Run the stages; each writes `out` (float16 weights), the next starts from what it wrote."""
    results = []
    for index, stage in enumerate(STAGES):
        stage = replace(stage, seed=seed)
        if index == 0:
            encoder = create_encoder_from_config(ARCHITECTURE, seed=seed)
        else:
            encoder = load_encoder(str(out), EncoderConfig(device="cpu", precision="fp32"))
        cpu_started, load_before = time.process_time(), os.getloadavg()[0]
        result = finetune(
            encoder, train_set, out, ARCHITECTURE, stage, on_step=report, fits=caption_fits
        )
        print(f"stage {index + 1}: {result.steps} steps in {result.seconds:.0f}s", flush=True)
        results.append(
            {
                **result.to_dict(),
                "output": out.name,
                "config": asdict(stage),
                # wall time depends on what else runs on the machine: record how busy it was
                "cpu_seconds": round(time.process_time() - cpu_started, 1),
                "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
        )
    return results


def evaluate(out: Path, splits: ShapesSplits, work: Path) -> dict[str, Any]:
    trained = load_encoder(str(out), EncoderConfig(device="cpu", precision="fp32"))
    figures: dict[str, Any] = {
        "robustness": {
            name: row.to_dict() for name, row in measure_suite(trained, work / "robust").items()
        }
    }
    for name, path in (("heldout", splits.heldout), ("novel", splits.novel)):
        encoded = encode_captioned_set(trained, read_captions(path), match="label")
        figures[name] = retrieval_report(
            encoded, model="shapes-tiny", source=path.name, match="label"
        ).to_dict()
        if name == "heldout":
            figures["heldout_compression"] = [r.to_dict() for r in compression_study(encoded)]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_MODEL_DIR)
    parser.add_argument("--data", type=Path, help="keep the generated data set here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="skip training: evaluate the model in --out and rewrite eval.json",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads; 1 is fastest on a busy machine"
    )
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "shapes"
        started = time.perf_counter()
        splits = write_shapes_dataset(data, seed=args.seed, **DATA)
        train_set = read_captions(splits.train)
        data_seconds = time.perf_counter() - started
        print(f"data: {len(train_set)} training images in {data_seconds:.1f}s")
        previous = json.loads((args.out / "eval.json").read_text()) if args.evaluate_only else {}
        if args.evaluate_only:  # keep the training record of the run that made the weights
            stages = previous.get("training")
        else:
            stages = train(train_set, args.out, args.seed)
        trained_seconds = previous.get("data_and_training_seconds") or time.perf_counter() - started
        figures = evaluate(args.out, splits, Path(tmp))
    summary = {
        "recipe": {
            "architecture": ARCHITECTURE,
            "stages": [asdict(stage) for stage in STAGES],
            "data": {
                "seed": args.seed,
                "generator": "crossmodal.evaluate.synthetic.write_shapes_dataset",
                **DATA,
            },
            # every caption of a batch is a true pair of every image it describes, not only of
            # its own: "a red circle" is not pushed away from the other red circles
            "pairs": "crossmodal.evaluate.shape_captions.caption_fits",
        },
        "training": stages,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}",
        "data_seconds": previous.get("data_seconds") or round(data_seconds, 1),
        "data_and_training_seconds": round(trained_seconds, 1),
        "weights_bytes": (args.out / "open_clip_model.safetensors").stat().st_size,
        **figures,
    }
    (args.out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name in ("heldout", "novel"):
        t2i, i2t = figures[name]["text_to_image"], figures[name]["image_to_text"]
        print(
            f"{name}: text->image R@1 {t2i['R@1']:.3f} R@5 {t2i['R@5']:.3f} "
            f"(chance {t2i['chance_R@1']:.4f}); image->text R@1 {i2t['R@1']:.3f} "
            f"R@5 {i2t['R@5']:.3f} (chance {i2t['chance_R@1']:.4f})"
        )
    for name, row in figures["robustness"].items():
        print(
            f"{name:48} text->image R@1 {row['text_to_image_R@1']:.3f} image->text R@1 "
            f"{row['image_to_text_R@1']:.3f} zero-shot {row['zero_shot_top1']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
