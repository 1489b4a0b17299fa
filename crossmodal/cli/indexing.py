"""CLI commands that build and describe a database: index, info, models."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from crossmodal.cli.options import (
    Location,
    choose_model,
    db_option,
    err,
    friendly_errors,
    json_option,
    load,
    load_image_encoder,
    model_options,
    out,
    prepare_image_export,
    prepare_text_export,
    print_json,
    storage_option,
)
from crossmodal.indexing import IndexConfig, IndexProgress, IndexReport, index_folder
from crossmodal.indexing.pipeline import DECODERS
from crossmodal.media.remote import parse_storage_options
from crossmodal.model.specs import SHIPPED_MODEL
from crossmodal.store import IMAGES, TEXT_PREFIX, Store


@click.command()
@click.argument("photos_dir", type=Location(must_exist=True))
@db_option
@storage_option
@model_options
@click.option("--rebuild", is_flag=True, help="Drop the image table first (to switch models).")
@click.option("--include-hidden", is_flag=True, help="Also index hidden files and folders.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Decoding threads (default: one per CPU core; 0: decode in the encoding thread).",
)
@click.option(
    "--decoder",
    type=click.Choice(DECODERS),
    default="auto",
    show_default=True,
    help="Who decodes JPEGs: threads (Pillow, at reduced size), encoder (its device: nvJPEG on "
    "a GPU), auto (encoder on a GPU, else threads).",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds to queue behind another index run on the same --db (default: refuse at once).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this machine's cores or GPU; ray: Ray Data, on a local Ray or a cluster "
    "(needs `pip install 'crossmodal[ray]'`).",
)
@click.option(
    "--address",
    default=None,
    help="With --engine ray: the cluster to join (auto, or HOST:PORT); default: start a local Ray.",
)
@click.option(
    "--actors",
    type=click.IntRange(1, 100_000),
    default=1,
    show_default=True,
    help="With --engine ray: encoder actors, each loading the model once.",
)
@click.option(
    "--gpus-per-actor",
    type=click.FloatRange(min=0),
    default=0.0,
    help="With --engine ray: GPUs per encoder actor (default 0: encode on CPUs).",
)
@click.option(
    "--cpus-per-actor",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="With --engine ray: CPU cores (and torch threads) per CPU encoder actor.",
)
@json_option
@friendly_errors
def index(
    photos_dir: Path | str,
    db_dir: Path | str,
    storage_options: tuple[str, ...],
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
    rebuild: bool,
    include_hidden: bool,
    workers: int | None,
    decoder: str,
    wait: float,
    engine: str,
    address: str | None,
    actors: int,
    gpus_per_actor: float,
    cpus_per_actor: float,
    as_json: bool,
) -> None:
    """Index every image under PHOTOS_DIR (recursively) into the database.

    Re-running does only the needed work: new and changed photos are encoded, moved ones keep
    their vectors, deleted ones leave the table. `--engine ray` writes the same table with Ray.
    """
    if engine == "local" and (address or actors != 1 or gpus_per_actor or cpus_per_actor != 1):
        raise click.UsageError("--address, --actors and --*-per-actor need --engine ray")
    if engine == "ray" and decoder != "auto":
        raise click.UsageError(
            "--decoder applies to --engine local; Ray's tasks decode with Pillow"
        )
    options = parse_storage_options(storage_options)
    store = Store.open(db_dir, create=True, storage_options=options)
    spec = choose_model(store, model_spec)  # a rebuild keeps the model unless told
    ray_config = None
    if engine == "ray":
        from crossmodal.indexing.on_ray import RayConfig, quiet_ray_logs

        quiet_ray_logs()
        ray_config = RayConfig(
            address=address,
            actors=actors,
            gpus_per_actor=gpus_per_actor,
            cpus_per_actor=cpus_per_actor,
            precision=precision,
        )
        # the driver's copy names the model and its identity; the actors do the encoding
        encoder = load(spec, "cpu", "fp32", batch_size)
    elif decoder == "encoder":  # only the torch model decodes JPEGs itself
        encoder = load(spec, device, precision, batch_size)
    else:
        encoder = load_image_encoder(spec, device, precision, batch_size)
    config = IndexConfig(
        batch_size=batch_size,
        include_hidden=include_hidden,
        rebuild=rebuild,
        workers=workers,
        wait=wait,
        decoder=decoder,
    )
    with Progress(
        TextColumn("[bold]indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} img/s"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("index", total=None, rate=0.0)

        def on_progress(event: IndexProgress) -> None:
            bar.update(task, completed=event.done, total=event.total, rate=event.images_per_second)

        if ray_config is None:
            report = index_folder(photos_dir, store, encoder, config, on_progress)
            where, precision = encoder.device, encoder.precision
        else:
            from crossmodal.indexing.on_ray import index_folder_on_ray

            report = index_folder_on_ray(
                photos_dir, store, encoder, config, ray_config, on_progress
            )
            kind = f"{gpus_per_actor:g} GPU" if gpus_per_actor else f"{cpus_per_actor:g} CPU"
            where = f"Ray: {actors} actor(s) × {kind}"
    if as_json:
        print_json(report_dict(report, store))
    else:
        print_report(report, where, precision)
    prepare_text_export(encoder)  # so that even the first text search needs no torch
    if ray_config is None:
        prepare_image_export(encoder, store)  # so that the next run starts without torch


def report_dict(report: IndexReport, store: Store) -> dict[str, object]:
    return {
        "root": report.root,
        "db": str(store.db_dir),
        "new": report.new,
        "updated": report.updated,
        "moved": report.moved,
        "unchanged": report.unchanged,
        "removed": report.removed,
        "failed": [{"path": f.path, "reason": f.reason} for f in report.failed],
        "encoded": report.encoded,
        "seconds": round(report.seconds, 3),
        "images_per_second": round(report.images_per_second, 2),
        "seconds_since_start": round(_since_start(), 3),  # imports and the model's load too
    }


def _since_start() -> float:
    from crossmodal.cli import STARTED

    return time.perf_counter() - STARTED


def print_report(report: IndexReport, device: str, precision: str) -> None:
    summary = Table(title=f"indexed {report.root}", show_header=True, title_justify="left")
    for name in ("new", "updated", "moved", "unchanged", "removed", "failed"):
        summary.add_column(name, justify="right")
    summary.add_row(
        str(report.new),
        str(report.updated),
        str(report.moved),
        str(report.unchanged),
        str(report.removed),
        str(len(report.failed)),
    )
    out.print(summary)
    in_all = _since_start()
    out.print(
        f"encoded {report.encoded} images in {report.seconds:.1f} s "
        f"({report.images_per_second:.1f} img/s on {device}, {precision}); "
        f"{in_all:.1f} s and {report.encoded / in_all:.1f} img/s from the command's start"
    )
    if report.failed:
        out.print(Text(f"{len(report.failed)} file(s) could not be indexed:", "bold yellow"))
        for failure in report.failed:
            out.print(f"  {failure.path!r}: {failure.reason}")


@click.command()
@db_option
@json_option
@friendly_errors
def info(db_dir: Path, as_json: bool) -> None:
    """Which model built the database, its dimension, row counts, and the device in use."""
    from crossmodal.model.encoder import resolve_device, resolve_precision

    store = Store.open(db_dir)
    tables = [store.info(name) for name in store.table_names()]
    device = resolve_device("auto")
    precision = resolve_precision(device, "auto")
    data = {
        "db": str(store.db_dir),
        "device": device,
        "precision": precision,
        "tables": [
            {
                "name": t.name,
                "kind": t.kind,
                "rows": t.rows,
                "model": t.model.spec,
                "fingerprint": t.model.fingerprint,
                "dim": t.model.dim,
                "preprocess": t.model.preprocess,
                "schema_version": t.schema_version,
            }
            for t in tables
        ],
    }
    if as_json:
        print_json(data)
        return
    out.print(f"database   {store.db_dir}")
    out.print(f"device     {device} ({precision}) — what the torch model would use here")
    if device == "cpu":
        out.print(
            "           (`index`, searches, `classify`, `captions` and the demo use the model's"
            " ONNX exports once made)"
        )
    if not tables:
        out.print(f"no tables yet: run `crossmodal index PHOTOS_DIR --db {db_dir}`")
        return
    table = Table(show_header=True)
    for column in ("table", "rows", "model", "dim"):
        table.add_column(column)
    for t in tables:
        label = "images" if t.name == IMAGES else f"texts: {t.name[len(TEXT_PREFIX) :]}"
        table.add_row(label, str(t.rows), t.model.spec, str(t.model.dim))
    out.print(table)


@click.command()
@click.option("--filter", "pattern", default="", help="Only architectures containing this text.")
@json_option
def models(pattern: str, as_json: bool) -> None:
    """List the ARCH:PRETRAINED pairs open_clip can download (needs internet on first use),
    and the model this package ships (works offline)."""
    from crossmodal.model.encoder import list_pretrained

    specs = [f"{arch}:{tag}" for arch, tag in list_pretrained() if pattern.lower() in arch.lower()]
    if pattern.lower() in SHIPPED_MODEL:
        specs.append(SHIPPED_MODEL)
    if as_json:
        print_json(specs)
        return
    for spec in specs:
        click.echo(spec)


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-n",
    "count",
    type=click.IntRange(1, 100_000),
    default=48,
    show_default=True,
    help="How many images.",
)
@click.option("--seed", default=0, show_default=True)
@json_option
@friendly_errors
def sample(folder: Path, count: int, seed: int, as_json: bool) -> None:
    """Write a small sample photo folder (coloured shapes) with labels.txt and captions.txt.

    The shapes are what the shipped offline model (`--model shapes-tiny`) understands.
    Does nothing when FOLDER already holds images.
    """
    from crossmodal.evaluate.synthetic import write_sample

    written = write_sample(folder, count, seed)
    if as_json:
        print_json(
            {
                "folder": str(folder),
                "written": 0 if written is None else len(written.images),
                "labels": str(folder / "labels.txt"),
                "captions": str(folder / "captions.txt"),
            }
        )
    elif written is None:
        out.print(f"{folder} already holds a sample; leaving it as it is")
    else:
        out.print(
            f"wrote {len(written.images)} sample images, labels.txt and captions.txt to {folder}"
        )


COMMANDS = (index, info, models, sample)
