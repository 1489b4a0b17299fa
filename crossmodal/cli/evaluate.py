"""CLI command that measures models: eval (shared options for finetune live here too).

Arguments in, library calls, results out as rich tables or JSON; errors become messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from crossmodal.cli.options import err, friendly_errors, out
from crossmodal.model.specs import MODEL_ENV_VAR, default_model_spec

F = TypeVar("F", bound=Callable[..., Any])


def _model_option(func: F) -> F:
    return click.option(
        "--model",
        "model_spec",
        default=None,
        help="ARCH:PRETRAINED, hf-hub:ORG/REPO, or a local model folder. "
        f"Default: ${MODEL_ENV_VAR}, else ViT-B-32:laion2b_s34b_b79k.",
    )(func)


def _device_option(func: F) -> F:
    return click.option(
        "--device", default="auto", show_default=True, help="auto, cuda, cuda:N, mps or cpu."
    )(func)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def _dump(data: Any, output: Path | None) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n")


@click.command("eval")
@click.argument(
    "captions", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--images",
    "image_root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the captions file's image paths are relative to (default: its folder).",
)
@click.option(
    "--match",
    type=click.Choice(["image", "label"]),
    default="image",
    show_default=True,
    help="image: a caption's own image is the hit (Flickr30k/COCO protocol); label: any "
    "image with the caption's label column.",
)
@click.option(
    "--classes",
    "classes_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also measure zero-shot accuracy on this folder-per-class set.",
)
@click.option(
    "--template",
    "templates",
    multiple=True,
    help="Prompt template for --classes, with {} for the class name; repeatable. "
    "Default: 'a photo of a {}.'",
)
@click.option(
    "--compression",
    is_flag=True,
    help="Also measure recall with vectors reduced by PCA and stored as float16.",
)
@click.option(
    "--dims",
    default=None,
    help="Dimensions for --compression, e.g. 256,128,64 "
    "(default: halvings of the model's dimension down to 8).",
)
@_model_option
@_device_option
@click.option("--precision", default="auto", show_default=True, help="auto, fp32, fp16 or bf16.")
@click.option("--batch-size", default=64, show_default=True, help="Images per forward pass.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON report to this file (tables still print).",
)
@friendly_errors
def eval_command(
    captions: Path | None,
    image_root: Path | None,
    match: str,
    classes_dir: Path | None,
    templates: tuple[str, ...],
    compression: bool,
    dims: str | None,
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
    as_json: bool,
    output: Path | None,
) -> None:
    """Measure a model: retrieval Recall@1/5/10 on CAPTIONS (CSV or JSONL), zero-shot accuracy.

    Run it before and after `crossmodal finetune` to see what the fine-tune bought.
    """
    import crossmodal.evaluate.evaluation as evaluation
    from crossmodal.media.captions import read_captions, read_class_folders
    from crossmodal.model.encoder import EncoderConfig, load_encoder

    if captions is None and classes_dir is None:
        raise click.UsageError("give a CAPTIONS file, --classes DIR, or both")
    dim_list = _parse_dims(dims)
    dataset = read_captions(captions, image_root) if captions else None
    class_set = read_class_folders(classes_dir) if classes_dir else None
    spec = model_spec or default_model_spec()
    with err.status(f"loading model {spec} ..."):
        encoder = load_encoder(spec, EncoderConfig(device, precision, batch_size))
    report: dict[str, Any] = {
        "model": encoder.identity.to_dict(),
        "device": encoder.device,
        "precision": encoder.precision,
    }
    with _progress() as progress:
        if dataset is not None:
            task = progress.add_task("encoding images", total=len(dataset), info="")
            encoded = evaluation.encode_captioned_set(
                encoder,
                dataset,
                match,
                on_progress=lambda done, total: progress.update(task, completed=done),
            )
            retrieval = evaluation.retrieval_report(
                encoded, model=spec, source=str(captions), match=match
            )
            report["retrieval"] = retrieval.to_dict()
            if compression:
                rows = evaluation.compression_study(encoded, dim_list)
                report["compression"] = [row.to_dict() for row in rows]
        if class_set is not None:
            task = progress.add_task("zero-shot", total=len(class_set.paths), info="")
            zero_shot = evaluation.evaluate_zero_shot(
                encoder,
                class_set,
                templates or evaluation.DEFAULT_TEMPLATES,
                on_progress=lambda done, total: progress.update(task, completed=done),
            )
            report["zero_shot"] = zero_shot.to_dict()
    if as_json:
        _dump(report, output)
        return
    if output is not None:
        _dump(report, output)
    out.print(f"model {spec} on {encoder.device} ({encoder.precision})")
    if "retrieval" in report:
        out.print(_retrieval_table(report["retrieval"]))
    if "compression" in report:
        out.print(_compression_table(report["compression"]))
    if "zero_shot" in report:
        z = report["zero_shot"]
        out.print(
            f"zero-shot on {z['images']} images, {len(z['classes'])} classes: "
            f"top-1 {z['top1']:.3f}, top-5 {z['top5']:.3f} (chance {z['chance_top1']:.3f})"
        )


def _parse_dims(dims: str | None) -> list[int] | None:
    if dims is None:
        return None
    try:
        values = [int(v) for v in dims.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            "a comma-separated list of integers, e.g. 256,128,64", param_hint="--dims"
        ) from None
    if not values or min(values) < 1:
        raise click.BadParameter("dimensions must be positive", param_hint="--dims")
    return values


def _retrieval_table(r: dict[str, Any]) -> Table:
    table = Table(
        title=f"retrieval on {r['source']}: {r['images']} images, {r['captions']} "
        f"captions, hits by {r['match']}"
    )
    for column in ("direction", "R@1", "R@5", "R@10", "mean rank", "median rank", "chance R@1"):
        table.add_column(column, justify="right" if column != "direction" else "left")
    for name, key in (("text → image", "text_to_image"), ("image → text", "image_to_text")):
        m = r[key]
        table.add_row(
            name,
            f"{m['R@1']:.3f}",
            f"{m['R@5']:.3f}",
            f"{m['R@10']:.3f}",
            f"{m['mean_rank']:.2f}",
            f"{m['median_rank']:g}",
            f"{m['chance_R@1']:.4f}",
        )
    return table


def _compression_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="recall against bytes per vector (PCA fitted on the images, float16)")
    for column in (
        "dim",
        "precision",
        "bytes/vector",
        "t→i R@1",
        "t→i R@10",
        "i→t R@1",
        "i→t R@10",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        t2i, i2t = row["text_to_image"], row["image_to_text"]
        table.add_row(
            str(row["dim"]),
            row["precision"],
            str(row["bytes_per_vector"]),
            f"{t2i['R@1']:.3f}",
            f"{t2i['R@10']:.3f}",
            f"{i2t['R@1']:.3f}",
            f"{i2t['R@10']:.3f}",
        )
    return table


COMMANDS = (eval_command,)
