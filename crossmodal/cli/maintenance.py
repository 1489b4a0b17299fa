"""CLI commands that look after a database without a model: optimize and duplicates."""

from __future__ import annotations

from pathlib import Path

import click

from crossmodal.cli.options import db_option, friendly_errors, json_option, out, print_json
from crossmodal.cli.searching import build_filters, filter_options
from crossmodal.store import IMAGES, TEXT_PREFIX, Store, row_dict


@click.command()
@click.option(
    "--build",
    is_flag=True,
    help="Build the ANN index now, even below the size where it is built automatically.",
)
@db_option
@json_option
@friendly_errors
def optimize(build: bool, db_dir: Path, as_json: bool) -> None:
    """Bring the search indexes up to date and compact the database files.

    `index` does this after each run; use it after writing with the library, or with --build
    to switch a smaller table from exact search to the ANN index.
    """
    store = Store.open(db_dir)
    states = {}
    for name in store.table_names():
        identity = store.info(name).model
        if name == IMAGES:
            table = store.images(identity)
        else:
            table = store.texts(name[len(TEXT_PREFIX) :], identity)  # type: ignore[assignment]
        states[name] = (
            table.build_index() if build and name == IMAGES else table.maintain_index(force=True)
        )
    if as_json:
        print_json({name: vars(state) for name, state in states.items()})
        return
    for name, state in states.items():
        mode = (
            f"ANN index {state.vector_index} ({state.partitions} partitions)"
            if state.vector_index
            else f"exact search (ANN index from {store.policy.min_rows:,} rows)"
        )
        out.print(f"{name}: {state.rows:,} rows, {mode}")
        if state.keyword_columns:
            out.print(f"  keyword index on {', '.join(state.keyword_columns)}")


@click.command()
@click.option(
    "--threshold",
    type=click.FloatRange(-1.0, 1.0),
    default=0.95,
    show_default=True,
    help="Cosine similarity above which two photos count as near-duplicates.",
)
@filter_options
@db_option
@json_option
@friendly_errors
def duplicates(threshold: float, db_dir: Path, as_json: bool, **filters: object) -> None:
    """Groups of near-identical photos. The first of each group is the one to keep (most
    pixels, then largest file). Nothing is deleted."""
    from crossmodal.search.duplicates import find_duplicates

    store = Store.open(db_dir)
    table = store.images(store.info(IMAGES).model)
    groups = find_duplicates(table, threshold, filters=build_filters(filters))
    if as_json:
        print_json(
            [{"similarity": g.similarity, "photos": [row_dict(r) for r in g.rows]} for g in groups]
        )
        return
    if not groups:
        out.print(f"no near-duplicates at similarity {threshold}")
        return
    for number, group in enumerate(groups, 1):
        click.echo(
            f"group {number}: {len(group.rows)} photos, similarity >= {group.similarity:.3f}"
        )
        for i, row in enumerate(group.rows):
            mark = "keep" if i == 0 else "    "
            click.echo(f"  {mark}  {row.width}x{row.height}  {row.path}")


COMMANDS = (optimize, duplicates)
