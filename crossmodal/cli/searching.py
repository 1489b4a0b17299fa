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
    load_query_encoder,
    load_text_encoder,
    model_options,
    out,
    prepare_text_export,
    print_json,
)
from crossmodal.errors import CrossmodalError, StoreError
from crossmodal.model.specs import Encoder
from crossmodal.search import (
    MAX_K,
    MAX_OFFSET,
    Searcher,
    SearchHit,
    SearchOptions,
    TextHit,
    zero_shot,
)
from crossmodal.search.labels import DEFAULT_TABLE, add_texts, read_texts
from crossmodal.search.query import Query, parse_query
from crossmodal.store import TEXT_PREFIX, Store, row_dict
from crossmodal.store.filters import Filters, parse_date
from crossmodal.store.importing import leave_out_pandas

image_path = click.Path(exists=True, dir_okay=False, path_type=Path)


def filter_options(func):  # type: ignore[no-untyped-def]
    """The options that narrow which photos a command looks at; they build a `Filters`."""
    options = [
        click.option("--folder", help="A folder path (with its subfolders), or a folder name."),
        click.option("--after", help="Taken on or after: YYYY, YYYY-MM or YYYY-MM-DD."),
        click.option("--before", help="Taken before: YYYY, YYYY-MM or YYYY-MM-DD."),
        click.option(
            "--min-width", type=click.IntRange(min=1), help="At least this many pixels wide."
        ),
        click.option(
            "--min-height", type=click.IntRange(min=1), help="At least this many pixels high."
        ),
        click.option("--orientation", type=click.Choice(["landscape", "portrait", "square"])),
        click.option(
            "--type",
            "types",
            multiple=True,
            help="File type, e.g. jpg or png; repeat or separate with commas.",
        ),
        click.option("--label", help="Only photos `classify --all` labelled so."),
        click.option("--where", help='SQL on the image table, e.g. "size > 5000000".'),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_filters(options: dict[str, object]) -> Filters:
    given: tuple[str, ...] = options.get("types") or ()  # type: ignore[assignment]
    types = tuple(t.strip() for value in given for t in str(value).split(","))
    after, before = options.get("after"), options.get("before")
    return Filters(
        folder=options.get("folder"),  # type: ignore[arg-type]
        after=parse_date(str(after), option="--after") if after else None,
        before=parse_date(str(before), option="--before") if before else None,
        min_width=options.get("min_width"),  # type: ignore[arg-type]
        min_height=options.get("min_height"),  # type: ignore[arg-type]
        orientation=options.get("orientation"),  # type: ignore[arg-type]
        types=tuple(t for t in types if t),
        label=options.get("label"),  # type: ignore[arg-type]
        sql=options.get("where"),  # type: ignore[arg-type]
    )


@click.command()
@click.argument("query", required=False)
@click.option("--image", "image", type=image_path, help="Find photos similar to this image.")
@click.option(
    "-k",
    "--top",
    "k",
    type=click.IntRange(1, MAX_K),
    default=10,
    show_default=True,
    help="How many results.",
)
@click.option(
    "--offset",
    type=click.IntRange(0, MAX_OFFSET),
    default=0,
    show_default=True,
    help="Skip this many (for paging).",
)
@click.option(
    "--min-score",
    type=click.FloatRange(-1.0, 1.0),
    default=None,
    help="Only hits at least this similar (cosine, e.g. 0.25).",
)
@click.option(
    "--hybrid", is_flag=True, help="Also match the words in file, folder and label names."
)
@filter_options
@db_option
@model_options
@json_option
@friendly_errors
def search(
    query: str | None,
    image: Path | None,
    k: int,
    offset: int,
    min_score: float | None,
    hybrid: bool,
    db_dir: Path,
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
    as_json: bool,
    **filters: object,
) -> None:
    """Search indexed photos by text (QUERY), by example image (--image), or both composed.

    \b
    QUERY is plain words, or weighted terms joined by + and -:
      crossmodal search "a dog on the beach"
      crossmodal search '"beach" + 0.5*"sunset" - "people"'
      crossmodal search '@me.jpg + "at night"'      (also: --image me.jpg "at night")
    """
    if not query and not image:
        raise click.UsageError("give either a text QUERY or --image PATH (or both)")
    parsed = parse_query(query) if query else None
    if image is not None:
        parsed = Query.image(image) + parsed if parsed else Query.image(image)
    assert parsed is not None
    options = SearchOptions(k, offset, min_score, build_filters(filters), hybrid)
    text_only = all(term.image is None for term in parsed.terms)
    if text_only:
        leave_out_pandas()  # a text search never needs it, and it costs a fifth of the wait
    store = Store.open(db_dir)
    spec = choose_model(store, model_spec)
    if text_only:
        encoder = load_text_encoder(spec, device, precision, batch_size)
    else:
        encoder = load_query_encoder(spec, device, precision, batch_size)
    searcher = Searcher(store, encoder)
    hits = searcher.search(parsed, options)
    print_hits(hits, as_json, offset, searcher.explain_empty(options) if not hits else None)
    if text_only:
        prepare_text_export(encoder)


def print_hits(
    hits: list[SearchHit], as_json: bool, offset: int = 0, why_empty: str | None = None
) -> None:
    if as_json:
        print_json(
            [
                {"rank": i, "score": round(h.score, 4), **row_dict(h.row)}
                for i, h in enumerate(hits, offset + 1)
            ]
        )
        return
    if not hits:
        out.print(f"no results: {why_empty}" if why_empty else "no results")
        return
    # plain lines, full paths: easy to read, copy, and pipe into other tools
    for i, hit in enumerate(hits, offset + 1):
        click.echo(f"{i:>3}  {hit.score:6.3f}  {hit.path}")


@click.group()
def labels() -> None:
    """Manage text tables (labels or captions) for image → text search."""


@labels.command("add")
@click.argument("texts_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--table", default=DEFAULT_TABLE, show_default=True, help="Text table name.")
@db_option
@model_options
@json_option
@friendly_errors
def labels_add(
    texts_file: Path,
    table: str,
    db_dir: Path,
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """Add the lines of TEXTS_FILE (one label or caption per line) to a text table."""
    store = Store.open(db_dir, create=True)
    spec = model_spec or _texts_model(store, table)
    encoder = load_text_encoder(spec, device, precision, batch_size)
    count = add_texts(store, encoder, read_texts(texts_file), table)
    total = store.info(TEXT_PREFIX + table).rows
    if as_json:
        print_json({"table": table, "added": count, "rows": total})
        return
    out.print(f"added {count} texts to table {table!r} ({total} in all)")


def _texts_model(store: Store, table: str) -> str:
    """Texts must share the images' vector space: default to the text table's, else images' model."""
    if TEXT_PREFIX + table in store.table_names():
        return choose_model(store, None, TEXT_PREFIX + table)
    return choose_model(store, None)


@labels.command("list")
@click.option("--table", default=DEFAULT_TABLE, show_default=True)
@db_option
@json_option
@friendly_errors
def labels_list(table: str, db_dir: Path, as_json: bool) -> None:
    """Print the texts of a table, one per line."""
    store = Store.open(db_dir)
    model = store.info(TEXT_PREFIX + table).model
    texts, _ = store.texts(table, model).all()
    if as_json:
        print_json(texts)
        return
    for text in texts:
        click.echo(text)


@click.command()
@click.argument("image", type=image_path, required=False)
@click.option("--table", default=DEFAULT_TABLE, show_default=True, help="Text table of labels.")
@click.option(
    "--labels",
    "inline",
    default=None,
    help="Comma-separated labels to use instead of a table, e.g. 'cat,dog,car'.",
)
@click.option(
    "--all",
    "whole_index",
    is_flag=True,
    help="Label every indexed photo (or those --folder selects) into the label column.",
)
@click.option("--relabel", is_flag=True, help="With --all: also photos labelled before.")
@click.option("--folder", help="With --all: only photos in this folder (path or name).")
@click.option("-k", "--top", "k", type=click.IntRange(1, MAX_K), default=5, show_default=True)
@db_option
@model_options
@json_option
@friendly_errors
def classify(
    image: Path | None,
    table: str,
    inline: str | None,
    whole_index: bool,
    relabel: bool,
    folder: str | None,
    k: int,
    db_dir: Path,
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """Zero-shot classification: the probability of each label for IMAGE.

    With --all, every indexed photo gets its most likely label from the table, stored in the
    image table so searches can filter on it (`search ... --label cat`). Only photos not yet
    labelled from the same labels are done again, so re-running after `index` is quick.
    """
    if whole_index:
        if image is not None or inline is not None:
            raise click.UsageError("--all labels the index from --table; give no IMAGE or --labels")
        store = Store.open(db_dir)  # the photos' vectors are stored: only labels are encoded
        spec = model_spec or _texts_model(store, table)
        encoder = load_text_encoder(spec, device, precision, batch_size)
        label_all(store, encoder, table, relabel, folder, as_json)
        return
    if image is None:
        raise click.UsageError("give an IMAGE to classify, or --all to label the whole index")
    if inline is not None:
        from crossmodal.media.images import decode_image

        candidates = [t.strip() for t in inline.split(",") if t.strip()]
        if not candidates:
            raise CrossmodalError("--labels holds no label; write e.g. --labels 'cat,dog'")
        existing = _existing(db_dir)  # typed labels need no database, but use its model if any
        encoder = load_query_encoder(
            choose_model(existing, model_spec), device, precision, batch_size
        )
        vector = encoder.encode_images([decode_image(image).image])[0]
        hits = zero_shot(encoder, vector, candidates, encoder.encode_texts(candidates))
    else:
        store = Store.open(db_dir)
        spec = model_spec or _texts_model(store, table)
        encoder = load_query_encoder(spec, device, precision, batch_size)
        hits = Searcher(store, encoder).classify(image, table)
    print_text_hits(hits[:k], as_json, with_probability=True)


def _existing(db_dir: Path | str) -> Store | None:
    if isinstance(db_dir, str):  # object storage: a database there, or none
        try:
            return Store.open(db_dir)
        except StoreError:
            return None
    return Store.open(db_dir) if db_dir.exists() else None


def label_all(
    store: Store, encoder: Encoder, table: str, relabel: bool, folder: str | None, as_json: bool
) -> None:
    from crossmodal.search.classification import label_index

    report = label_index(store, encoder, table, filters=Filters(folder=folder), relabel=relabel)
    if as_json:
        print_json(
            {
                "label_set": report.label_set,
                "labelled": report.labelled,
                "already_labelled": report.already,
                "counts": dict(report.counts),
                "seconds": round(report.seconds, 3),
            }
        )
        return
    out.print(
        f"labelled {report.labelled} photos from {report.label_set} in {report.seconds:.1f} s "
        f"({report.already} already labelled)"
    )
    for label, count in report.counts:
        click.echo(f"{count:>8}  {label}")


@click.command()
@click.argument("image", type=image_path)
@click.option("--table", default="captions", show_default=True, help="Text table of captions.")
@click.option("-k", "--top", "k", type=click.IntRange(1, MAX_K), default=5, show_default=True)
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
    store = Store.open(db_dir)
    spec = model_spec or _texts_model(store, table)
    encoder = load_query_encoder(spec, device, precision, batch_size)
    hits = Searcher(store, encoder).captions(image, table, k)
    print_text_hits(hits, as_json, with_probability=False)


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
