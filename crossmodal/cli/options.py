"""What every CLI command shares: model and database options, loading, and error display."""

from __future__ import annotations

import functools
import json
import logging
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from crossmodal.errors import CrossmodalError, TableNotFoundError
from crossmodal.media.remote import is_uri
from crossmodal.model.cache import CACHE_ENV_VAR
from crossmodal.model.onnx_files import exports_disabled
from crossmodal.model.specs import MODEL_ENV_VAR, default_model_spec
from crossmodal.store import IMAGES, Store

F = TypeVar("F", bound=Callable[..., Any])

# markup off: paths, labels and error messages print as written ("crossmodal[demo]" stays whole)
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class Location(click.ParamType):
    """A local folder (a Path) or a place on object storage (its URI, kept as text: a Path
    would fold s3://bucket into s3:/bucket)."""

    name = "path"

    def __init__(self, must_exist: bool = False) -> None:
        self.must_exist = must_exist
        self._local = click.Path(exists=must_exist, file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and is_uri(value):
            return value.rstrip("/")
        return self._local.convert(value, param, ctx)


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db_dir",
        type=Location(),
        default=Path("crossmodal.db"),
        show_default=True,
        envvar="CROSSMODAL_DB",
        help="Database folder (LanceDB), or s3://, gs://, az:// (credentials from the "
        "standard environment, e.g. AWS_ENDPOINT_URL). Env: CROSSMODAL_DB.",
    )(func)


def storage_option(func: F) -> F:
    return click.option(
        "--storage-option",
        "storage_options",
        multiple=True,
        metavar="KEY=VALUE",
        help="For object storage: LanceDB's storage options (aws_endpoint, allow_http, "
        "aws_access_key_id, ...), used for the database and the photos. Repeatable.",
    )(func)


def model_options(func: F) -> F:
    options = [
        click.option(
            "--model",
            "model_spec",
            default=None,
            help="ARCH:PRETRAINED (e.g. ViT-B-32:laion2b_s34b_b79k), hf-hub:ORG/REPO, or a local "
            f"model folder. Default: the table's own model, else ${MODEL_ENV_VAR}, "
            "else ViT-B-32:laion2b_s34b_b79k.",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="auto, cuda, cuda:N, mps or cpu.",
        ),
        click.option(
            "--precision",
            default="auto",
            show_default=True,
            help="auto, fp32, fp16 or bf16.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1, 65_536),
            default=64,
            show_default=True,
            help="Images per forward pass.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


def choose_model(store: Store | None, explicit: str | None, table: str = IMAGES) -> str:
    """The model to use: the one named, else the one the table was built with, else the default."""
    if explicit:
        return explicit
    if store is not None:
        try:
            return store.info(table).model.spec
        except TableNotFoundError:
            pass
    return default_model_spec()


def load(model_spec: str, device: str, precision: str, batch_size: int) -> Any:
    from crossmodal.model.encoder import EncoderConfig, load_encoder

    with err.status(f"loading model {model_spec} ..."):
        return load_encoder(model_spec, EncoderConfig(device, precision, batch_size))


def load_text_encoder(model_spec: str, device: str, precision: str, batch_size: int) -> Any:
    """For a command that encodes only text: the model's exported text tower when there is one
    and the device and precision asked for allow it (ONNX Runtime, no torch imported: about 0.8 s
    from the shell to the answer with ViT-B-32 here, against 4.7 s with torch), else the torch
    model."""
    if device in ("auto", "cpu") and precision in ("auto", "fp32"):
        from crossmodal.model.text_onnx import open_text_export

        exported = open_text_export(model_spec)
        if exported is not None:
            return exported
    return load(model_spec, device, precision, batch_size)


def load_image_encoder(model_spec: str, device: str, precision: str, batch_size: int) -> Any:
    """For a command that encodes only images on a CPU: the model's exported int8 image tower
    when there is one and the device and precision asked for allow it (no torch imported, and
    faster than torch in bf16 here: BENCHMARKS.md), else the torch model."""
    from crossmodal.model.image_onnx import open_image_export

    return _exported_or_torch(open_image_export, model_spec, device, precision, batch_size)


def load_query_encoder(model_spec: str, device: str, precision: str, batch_size: int) -> Any:
    """For a command that encodes images and texts on a CPU (an image query, `classify`,
    `captions`, the demo): the model's two exported towers when both exist and the device and
    precision asked for allow the int8 image tower, else the torch model."""
    from crossmodal.model.exported import open_exports

    return _exported_or_torch(open_exports, model_spec, device, precision, batch_size)


def _exported_or_torch(
    opener: Callable[[str, int], Any], spec: str, device: str, precision: str, batch_size: int
) -> Any:
    """`opener`'s export of the model when an int8 image export may stand in for the torch
    model (on a CPU, asked for by `--device cpu` or found by `--device auto`, at the default
    precision) and it has one; else the torch model."""
    on_cpu = device == "cpu" or (device == "auto" and not accelerator_visible())
    if on_cpu and precision == "auto":
        exported = opener(spec, batch_size)
        if exported is not None:
            return exported
    return load(spec, device, precision, batch_size)


def accelerator_visible() -> bool:
    """Whether `--device auto` may find a GPU, judged without importing torch: an NVIDIA or
    ROCm driver's device files, or an Apple silicon Mac (MPS)."""
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return True
    return any(
        Path(p).exists() for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd")
    )


def prepare_text_export(encoder: Any) -> None:
    """Export a torch model's text tower once, so later text searches start without torch."""
    from crossmodal.model.encoder import ClipEncoder

    if not isinstance(encoder, ClipEncoder) or exports_disabled():
        return
    from crossmodal.model.text_export import ensure_text_export, has_text_export

    try:
        if has_text_export(encoder):
            return
        with err.status("preparing the text encoder for fast searches (once per model) ..."):
            ensure_text_export(encoder)
    except Exception as exc:  # the search itself is done: only warn
        _warn_export("text encoder", "text searches keep loading the full model", exc)


PROBE_PHOTOS = 64  # photos an image export is checked on


def prepare_image_export(encoder: Any, store: Store) -> None:
    """Export a torch model's image tower once, checked on photos of the table it just filled,
    so later `index` runs on this CPU start without torch."""
    from crossmodal.model.encoder import ClipEncoder

    if not isinstance(encoder, ClipEncoder) or encoder.device != "cpu" or exports_disabled():
        return
    if encoder.pixel_recipe is None or store.remote:
        return
    from crossmodal.indexing.pipeline import sample_pixels
    from crossmodal.model.image_export import (
        MIN_PROBES,
        ensure_image_export,
        has_image_export,
        unfit_reason,
    )
    from crossmodal.model.image_onnx import export_folder

    try:
        if has_image_export(encoder):
            return
        paths = list(store.images(encoder.identity).stored_files())[:PROBE_PHOTOS]
        if len(paths) < MIN_PROBES:
            return  # too few photos to check an export on: a later run makes it
        with err.status("preparing the image encoder for fast indexing (once per model) ..."):
            made = ensure_image_export(encoder, sample_pixels(paths, encoder.pixel_recipe))
        if made is None and (unfit := unfit_reason(encoder)):
            err.print(f"note: {unfit}. Delete {export_folder(encoder.identity.fingerprint)} "
                      "to try again.")  # fmt: skip
    except Exception as exc:  # the index itself is done: only warn
        _warn_export("image encoder", "indexing keeps loading the full model", exc)


def _warn_export(what: str, consequence: str, exc: Exception) -> None:
    err.print(
        f"note: could not save the fast {what} ({exc}); {consequence}. "
        f"Set {CACHE_ENV_VAR} to a writable folder to fix this."
    )


def print_json(data: Any, *, indent: int | None = 2) -> None:
    click.echo(json.dumps(data, indent=indent, ensure_ascii=False, default=str))


def friendly_errors(func: F) -> F:
    """Turn crossmodal's typed errors into a message and exit status 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CrossmodalError as exc:
            err.print(Text.assemble(("error: ", "bold red"), str(exc)))
            sys.exit(1)
        except OSError as exc:  # a file the command itself writes (sample, a full disk)
            where = f" ({exc.filename})" if exc.filename else ""
            err.print(Text.assemble(("error: ", "bold red"), f"{exc.strerror or exc}{where}"))
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose == 0:
        # per-file failures are listed in the summary; don't print each one twice
        logging.getLogger("crossmodal.indexing").setLevel(logging.ERROR)
