"""The command line: converts arguments into library calls and results into text. No logic here."""

from __future__ import annotations

import gc
import time

STARTED = time.perf_counter()  # before the imports below: what "in all" times count from

import click  # noqa: E402

from crossmodal.cli import evaluate, indexing, maintenance, searching, training  # noqa: E402
from crossmodal.cli.demo import demo as demo_command  # noqa: E402
from crossmodal.cli.options import setup_logging  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="crossmodal")
def main(verbose: int) -> None:
    """crossmodal: search your photos by text, by example image, or ask what an image shows."""
    setup_logging(verbose)


for command in (
    *indexing.COMMANDS,
    *searching.COMMANDS,
    *maintenance.COMMANDS,
    *evaluate.COMMANDS,
    *training.COMMANDS,
):
    main.add_command(command)
main.add_command(demo_command)


def run() -> None:
    """The `crossmodal` command: `main`, then a quick exit. Freezing the objects the run made
    spares the interpreter's last garbage collections over LanceDB's and pydantic's many
    classes, about 0.15 s of every command here; the process ends right after."""
    try:
        main()
    finally:
        gc.freeze()
