"""`python -m crossmodal` runs the CLI."""

from crossmodal.cli import run

run()
