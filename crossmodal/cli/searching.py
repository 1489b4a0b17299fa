"""CLI commands that query a database: search, labels, classify, captions."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from crossmodal.cli.options import (
    choose_model,
    db_option,
    friendly_errors,
    json_option,
    load,
    model_options,
    out,
    print_json,
)
from crossmodal.errors import CrossmodalError
from crossmodal.labels import DEFAULT_TABLE, add_texts, read_texts
from crossmodal.search import (
    Searcher,
    SearchHit,
    TextHit,
    captions_for,
    classify_with_table,
    classify_with_texts,
)
from crossmodal.store import TEXT_PREFIX, Store, row_dict

image_path = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.argument("query", required=False)
@click.option("--image", "image", type=image_path, help="Find photos similar to this image.")
@click.option("-k", "--top", "k", default=10, show_default=True, help="How many results.")
@click.option(
    "--where", default=None, help="SQL filter on the image table, e.g. \"suffix = '.png'\"."
)
@db_option
@model_options
@json_option
@friendly_errors
def search(
    query: str | None,
    image: Path | None,
    k: int,
    where: str | None,
    db_dir: Path,
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """Search indexed photos by text (QUERY) or by example image (--image)."""
    if bool(query) == bool(image):
        raise click.UsageError("give either a text QUERY or --image PATH")
    store = Store.open(db_dir)
    encoder = load(choose_model(store, model_spec), device, precision, batch_size)
    searcher = Searcher(store, encoder)
    if query:
        hits = searcher.by_text(query, k, where)
    else:
        assert image is not None
        hits = searcher.by_image(image, k, where)
    print_hits(hits, as_json)


def print_hits(hits: list[SearchHit], as_json: bool) -> None:
    if as_json:
        print_json(
            [
                {"rank": i, "score": round(h.score, 4), **row_dict(h.row)}
                for i, h in enumerate(hits, 1)
            ]
        )
        return
    if not hits:
        out.print("no results")
        return
    # plain lines, full paths: easy to read, copy, and pipe into other tools
    for i, hit in enumerate(hits, 1):
        click.echo(f"{i:>3}  {hit.score:6.3f}  {hit.path}")


@click.group()
def labels() -> None:
    """Manage text tables (labels or captions) for image → text search."""


@labels.command("add")
@click.argument("texts_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--table", default=DEFAULT_TABLE, show_default=True, help="Text table name.")
@db_option
@model_options
@friendly_errors
def labels_add(
    texts_file: Path,
    table: str,
    db_dir: Path,
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
) -> None:
    """Add the lines of TEXTS_FILE (one label or caption per line) to a text table."""
    store = Store.open(db_dir, create=True)
    spec = model_spec or _texts_model(store, table)
    encoder = load(spec, device, precision, batch_size)
    count = add_texts(store, encoder, read_texts(texts_file), table)
    total = store.info(TEXT_PREFIX + table).rows
    out.print(f"added {count} texts to table {table!r} ({total} in all)")


def _texts_model(store: Store, table: str) -> str:
    """Texts must share the images' vector space: default to the text table's, else images' model."""
    if TEXT_PREFIX + table in store.table_names():
        return choose_model(store, None, TEXT_PREFIX + table)
    return choose_model(store, None)


@labels.command("list")
@click.option("--table", default=DEFAULT_TABLE, show_default=True)
@db_option
@friendly_errors
def labels_list(table: str, db_dir: Path) -> None:
    """Print the texts of a table, one per line."""
    store = Store.open(db_dir)
    model = store.info(TEXT_PREFIX + table).model
    texts, _ = store.texts(table, model).all()
    for text in texts:
        click.echo(text)


def _image_text_setup(
    image: Path,
    table: str,
    db_dir: Path,
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
):  # type: ignore[no-untyped-def]
    store = Store.open(db_dir)
    encoder = load(model_spec or _texts_model(store, table), device, precision, batch_size)
    from crossmodal.images import decode_image

    vector = encoder.encode_images([decode_image(image).image])[0]
    return store, encoder, vector


@click.command()
@click.argument("image", type=image_path)
@click.option("--table", default=DEFAULT_TABLE, show_default=True, help="Text table of labels.")
@click.option(
    "--labels",
    "inline",
    default=None,
    help="Comma-separated labels to use instead of a table, e.g. 'cat,dog,car'.",
)
@click.option("-k", "--top", "k", default=5, show_default=True)
@db_option
@model_options
@json_option
@friendly_errors
def classify(
    image: Path,
    table: str,
    inline: str | None,
    k: int,
    db_dir: Path,
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """Zero-shot classification: the probability of each label for IMAGE."""
    if inline is not None:
        from crossmodal.images import decode_image

        candidates = [t.strip() for t in inline.split(",") if t.strip()]
        if not candidates:
            raise CrossmodalError("--labels holds no label; write e.g. --labels 'cat,dog'")
        store = Store.open(db_dir, create=True)
        spec = choose_model(store, model_spec)
        encoder = load(spec, device, precision, batch_size)
        vector = encoder.encode_images([decode_image(image).image])[0]
        hits = classify_with_texts(encoder, vector, candidates)
    else:
        store, encoder, vector = _image_text_setup(
            image, table, db_dir, model_spec, device, precision, batch_size
        )
        hits = classify_with_table(encoder, vector, store.texts(table, encoder.identity))
    print_text_hits(hits[:k], as_json, with_probability=True)


@click.command()
@click.argument("image", type=image_path)
@click.option("--table", default="captions", show_default=True, help="Text table of captions.")
@click.option("-k", "--top", "k", default=5, show_default=True)
@db_option
@model_options
@json_option
@friendly_errors
def captions(
    image: Path,
    table: str,
    k: int,
    db_dir: Path,
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """Caption retrieval: the texts of a table that best describe IMAGE."""
    store, encoder, vector = _image_text_setup(
        image, table, db_dir, model_spec, device, precision, batch_size
    )
    print_text_hits(
        captions_for(store.texts(table, encoder.identity), vector, k),
        as_json,
        with_probability=False,
    )


def print_text_hits(hits: list[TextHit], as_json: bool, with_probability: bool) -> None:
    if as_json:
        print_json(
            [
                {
                    "text": h.text,
                    "score": round(h.score, 4),
                    **({"probability": round(h.probability or 0.0, 4)} if with_probability else {}),
                }
                for h in hits
            ]
        )
        return
    table = Table(show_header=True)
    table.add_column("text")
    table.add_column("score", justify="right")
    if with_probability:
        table.add_column("probability", justify="right")
    for hit in hits:
        cells = [hit.text, f"{hit.score:.3f}"]
        if with_probability:
            cells.append(f"{(hit.probability or 0.0):.1%}")
        table.add_row(*cells)
    out.print(table)


COMMANDS = (search, labels, classify, captions)
