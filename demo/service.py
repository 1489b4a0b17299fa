"""What the demo asks of the library: searches as gallery items, labels as probabilities, status.

Sits on top of the library's one search call (`Searcher.search`), indexing and thumbnails; the
Gradio app next to it only wires these calls to widgets. No gradio here, so every behaviour is
tested directly.
"""

from __future__ import annotations

import functools
import operator
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from crossmodal.errors import CrossmodalError, ImageDecodeError, StoreError
from crossmodal.indexing import IndexConfig, IndexProgress, IndexReport, index_folder
from crossmodal.media.images import decode_image
from crossmodal.media.remote import ObjectStorage, is_uri
from crossmodal.model.specs import Encoder
from crossmodal.search import Searcher, SearchHit, SearchOptions, TextHit, zero_shot
from crossmodal.search.query import Query, parse_query
from crossmodal.store import IMAGES, TEXT_PREFIX, ImageRow, Store
from crossmodal.store.filters import Filters, parse_date

from .thumbnails import PREVIEW_SIZE, Thumbnails

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # a 12-MP JPEG is 3-10 MB; a 100-MP TIFF still fits
MAX_RESULTS = 200
MAX_LABELS = 10  # bars in the label chart
TYPED = "typed labels"  # the label source that is the text box, not a table
READABLE_FORMATS = "JPEG, PNG, WebP, GIF, TIFF or BMP"


@dataclass(frozen=True)
class GalleryItem:
    hit: SearchHit
    thumbnail: str  # a file in the demo's own folder, never the original photo
    caption: str
    problem: str | None = None  # why the photo could not be shown (moved, deleted, corrupt)


@dataclass(frozen=True)
class Results:
    items: tuple[GalleryItem, ...]
    summary: str


@dataclass(frozen=True)
class PhotoDetails:
    path: str
    preview: str | None  # a large copy, None when the file cannot be read any more
    fields: tuple[tuple[str, str], ...]  # (label, value) rows for a details table

    def markdown(self) -> str:
        title, *rest = self.fields
        lines = [f"**{_escape(title[1])}**"]
        lines += [f"{label}: {_escape(value)}" for label, value in rest]
        return "  \n".join(lines)


@dataclass(frozen=True)
class Status:
    db: str
    model: str
    device: str
    precision: str
    images: int
    texts: tuple[tuple[str, int], ...] = field(default_factory=tuple)
    problem: str | None = None  # what stops searching and how to fix it

    def markdown(self) -> str:
        tables = ", ".join(f"{name} ({count})" for name, count in self.texts) or "none"
        lines = [
            f"**Model** `{self.model}` on **{device_label(self.device)}** ({self.precision})",
            f"**Index** `{self.db}`: {self.images} photos · text tables: {tables}",
        ]
        if self.problem:
            lines.append("> ⚠️ " + self.problem.replace("\n", "  \n> "))
        return "  \n".join(lines)


def device_label(device: str) -> str:
    kind = device.split(":")[0]
    return {"cuda": "CUDA GPU", "mps": "Apple GPU (MPS)", "cpu": "CPU"}.get(kind, kind) + (
        f" {device}" if ":" in device else ""
    )


def search_options(
    k: float = 24,
    min_score: float | None = None,
    folder: str | None = None,
    taken_from: str | None = None,
    taken_until: str | None = None,
    page: float | None = 1,
) -> SearchOptions:
    """What the page's filter widgets ask for, as the search module's options: `k` results of
    page `page` (from 1), at least `min_score` (0 or None: no minimum), in `folder` (a path, or
    a folder name at any depth), taken from the start of `taken_from` to the end of
    `taken_until` (2019, 2019-06 or 2019-06-30; empty: no limit)."""
    k = max(1, min(int(k), MAX_RESULTS))
    return SearchOptions(
        k=k,
        offset=(max(1, int(page or 1)) - 1) * k,
        min_score=min_score or None,
        filters=Filters(
            folder=folder or None,
            after=_date(taken_from, "'from' date"),
            before=_date(taken_until, "'until' date", end=True),
        ),
    )


def _date(text: str | None, option: str, *, end: bool = False) -> datetime | None:
    return parse_date(text, option=option, end=end) if text and text.strip() else None


def compose(query: str, extra: Sequence[tuple[str, float]] = ()) -> Query:
    """The text box's query (plain words, or the CLI's `"beach" + 0.5*"sunset"` syntax) plus
    the weighted extra terms, empty ones left out. No @photo terms: the page must never read a
    file of this machine that is not in the index."""
    parts = [parse_query(query)] if query.strip() else []
    parts += [weight * Query.text(text) for text, weight in extra if text.strip() and weight]
    if not parts:
        raise CrossmodalError("the query is empty; type what the photo should show")
    composed = functools.reduce(operator.add, parts)
    if any(term.image is not None for term in composed.terms):
        raise CrossmodalError(
            "@photo terms are not read from this box; search with a photo in the "
            "'Photo → photos' tab, or with 'More like this' on a result"
        )
    return composed


def parse_labels(text: str) -> list[str]:
    """Candidate labels typed on the spot: separated by commas or new lines, repeats dropped."""
    labels = (part.strip() for line in text.splitlines() for part in line.split(","))
    return list(dict.fromkeys(label for label in labels if label))


def check_upload(path: str | os.PathLike[str] | None) -> Path:
    """An uploaded file the demo will decode: present, not too large, and really an image."""
    if path is None:
        raise CrossmodalError("drop or paste a photo first")
    upload = Path(path)
    size = upload.stat().st_size if upload.is_file() else 0
    if size > MAX_UPLOAD_BYTES:
        raise CrossmodalError(
            f"{upload.name} is {size / 2**20:.0f} MB; photos up to "
            f"{MAX_UPLOAD_BYTES // 2**20} MB can be searched with"
        )
    return upload


class DemoService:
    """One database and one encoder, shared by every request of the demo.

    The model is loaded once by the caller and passed in. The index is looked up on each
    request, so a database indexed (or fixed) while the demo runs is picked up without a restart.
    """

    def __init__(self, db_dir: str | os.PathLike[str], encoder: Encoder, workdir: Path) -> None:
        # a local folder, or a database on object storage (photos there are read from it too)
        self.db_dir: Path | str = (
            str(db_dir) if is_uri(db_dir) else Path(db_dir).expanduser().resolve()
        )
        self.encoder = encoder
        self.workdir = workdir  # private folder for thumbnails (and Gradio's uploads)
        # photos on object storage are read with the environment's credentials (AWS_* ...)
        self.thumbnails = Thumbnails(workdir / "thumbnails", ObjectStorage())
        self._cached: tuple[tuple[int, ...], Searcher] | None = None

    # -- the index ------------------------------------------------------------------------------

    def searcher(self) -> Searcher:
        """A searcher over the index; a typed error saying how to fix it when there is none.

        Opened once and reused while the database's tables stay the same ones: new rows from an
        index run are seen anyway (each table use checks out the latest commit), and a table
        dropped and made again (`--rebuild`, another model) is noticed by its folder changing.
        """
        stamp = self._stamp()
        cached = self._cached
        if cached is not None and cached[0] == stamp:
            return cached[1]
        searcher = Searcher(Store.open(self.db_dir), self.encoder)
        self._cached = (stamp, searcher) if stamp else None
        return searcher

    def _stamp(self) -> tuple[int, ...]:
        if isinstance(self.db_dir, str):
            return (1,)  # a bucket has no folder times: keep the searcher (tables stay current)
        try:
            db = os.stat(self.db_dir)
            images = os.stat(self.db_dir / f"{IMAGES}.lance")
        except OSError:
            return ()
        return (db.st_ino, db.st_mtime_ns, images.st_ino, images.st_ctime_ns)

    def status(self) -> Status:
        identity = self.encoder.identity
        base = Status(
            str(self.db_dir), identity.spec, self.encoder.device, self.encoder.precision, 0
        )
        try:
            searcher = self.searcher()
        except CrossmodalError as exc:
            return replace(base, problem=str(exc))
        texts = tuple(
            (name, searcher.store.info(TEXT_PREFIX + name).rows)
            for name in searcher.store.text_table_names()
        )
        images = searcher.images.count()
        problem = None if images else searcher.explain_empty()
        return replace(base, images=images, texts=texts, problem=problem)

    def folders(self) -> list[tuple[str, str]]:
        """(label, folder) choices for the folder filter: every folder that holds photos, and
        their parents up to the common root, labelled relative to that root."""
        try:
            rows = self.searcher().images.rows()
        except CrossmodalError:
            return []
        folders = {row.folder for row in rows}
        if not folders:
            return []
        root = os.path.commonpath(sorted(folders))
        every = set(folders)
        for folder in folders:
            while folder != root and len(folder) > len(root):
                folder = os.path.dirname(folder)
                every.add(folder)
        return [(_relative(f, root), f) for f in sorted(every)]

    def text_sources(self) -> list[str]:
        """Where labels can come from: the text box, then each text table of the database."""
        try:
            return [TYPED, *Store.open(self.db_dir).text_table_names()]
        except StoreError:
            return [TYPED]

    # -- searching ------------------------------------------------------------------------------

    def search_text(
        self, query: str, options: SearchOptions, extra: Sequence[tuple[str, float]] = ()
    ) -> Results:
        composed = compose(query, extra)
        return self._results(composed, options, _code(composed.describe()))

    def search_image(
        self, upload: str | os.PathLike[str] | None, options: SearchOptions
    ) -> Results:
        picture = self._decode_upload(upload)
        return self._results(picture, options, f"photos like {Path(str(upload)).name}")

    def more_like(self, path: str, options: SearchOptions) -> Results:
        """Neighbours of a photo of the index, the photo itself left out."""
        searcher = self.searcher()
        record = searcher.images.get(path)
        if record is None:
            raise CrossmodalError(f"{path} is not in the index any more; search again")
        return self._results(record[1], options, f"photos like {record[0].name}", exclude=path)

    def _results(
        self,
        query: Query | Image.Image | np.ndarray,
        options: SearchOptions,
        what: str,
        exclude: str | None = None,
    ) -> Results:
        started, searcher = time.perf_counter(), self.searcher()
        if exclude is not None:
            options = replace(options, exclude=(exclude,))
        hits = searcher.search(query, options)
        items = self.gallery(hits)
        seconds = time.perf_counter() - started
        if items:
            summary = f"{len(items)} photo{'s' if len(items) != 1 else ''} for {what}"
            return Results(items, f"{summary} · {seconds:.2f} s")
        reason = searcher.explain_empty(options)
        return Results(items, f"No photo for {what}: {reason}")

    def gallery(self, hits: Sequence[SearchHit]) -> tuple[GalleryItem, ...]:
        thumbnails = self.thumbnails.of_many([h.row for h in hits])
        items = []
        for hit, thumb in zip(hits, thumbnails, strict=True):
            picture = str(thumb.path) if thumb.path else str(self.thumbnails.placeholder())
            caption = f"{hit.score:.3f} · {hit.row.name}" + ("" if thumb.path else " (unreadable)")
            items.append(GalleryItem(hit, picture, caption, thumb.problem))
        return tuple(items)

    def details(self, item: GalleryItem) -> PhotoDetails:
        row = item.hit.row
        preview = self.thumbnails.of(row, PREVIEW_SIZE)
        fields = [
            ("file", row.name),
            ("folder", row.folder),
            ("score", f"{item.hit.score:.3f}"),
            ("size", f"{row.width} × {row.height} px · {_megabytes(row.size)} · {row.format}"),
            ("date", _taken(row)),
        ]
        if preview.problem:
            fields.append(("problem", f"cannot show the photo: {preview.problem}"))
        return PhotoDetails(row.path, str(preview.path) if preview.path else None, tuple(fields))

    # -- image -> text --------------------------------------------------------------------------

    def labels(
        self, upload: str | os.PathLike[str] | None, source: str, typed: str
    ) -> list[TextHit]:
        """Which labels fit the photo, most likely first, with CLIP's softmax probabilities."""
        picture = self._decode_upload(upload)
        if source == TYPED:
            candidates = parse_labels(typed)
            if not candidates:
                raise CrossmodalError(
                    "type a few labels to choose from, separated by commas, "
                    "e.g. 'a dog, a cat, a beach at sunset'"
                )
            vector = self.encoder.encode_images([picture])[0]  # needs no database
            return zero_shot(
                self.encoder, vector, candidates, self.encoder.encode_texts(candidates)
            )
        return self.searcher().classify(picture, source)

    def _decode_upload(self, upload: str | os.PathLike[str] | None) -> Image.Image:
        path = check_upload(upload)
        try:
            return decode_image(path).image
        except ImageDecodeError as exc:
            raise CrossmodalError(
                f"{path.name} is not a photo crossmodal can read: {exc.reason}. "
                f"Drop a {READABLE_FORMATS} file."
            ) from exc

    # -- indexing -------------------------------------------------------------------------------

    def index(
        self, folder: str, on_progress: Callable[[IndexProgress], None] | None = None
    ) -> IndexReport:
        root = Path(folder.strip()).expanduser()
        if not folder.strip() or not root.is_dir():
            raise CrossmodalError(f"{folder!r} is not a folder on this machine; give a folder path")
        store = Store.open(self.db_dir, create=True)
        return index_folder(root, store, self.encoder, IndexConfig(), on_progress)


def label_chart(hits: Sequence[TextHit]) -> dict[str, float]:
    """The top labels and their probabilities, as a bar chart shows them."""
    return {h.text: float(h.probability or 0.0) for h in hits[:MAX_LABELS]}


def index_summary(report: IndexReport) -> str:
    text = (
        f"Indexed `{report.root}`: {report.new} new, {report.updated} updated, "
        f"{report.moved} moved, {report.unchanged} unchanged, {report.removed} removed "
        f"in {report.seconds:.1f} s."
    )
    if report.failed:
        shown = "\n".join(f"- `{f.path}`: {f.reason}" for f in report.failed[:20])
        more = f"\n- … and {len(report.failed) - 20} more" if len(report.failed) > 20 else ""
        text += f"\n\n{len(report.failed)} file(s) could not be indexed:\n{shown}{more}"
    return text


def _relative(folder: str, root: str) -> str:
    if folder == root:
        return f"{os.path.basename(root) or root} (all)"
    return os.path.relpath(folder, os.path.dirname(root))


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"


def _taken(row: ImageRow) -> str:
    when = row.taken_at.strftime("%Y-%m-%d %H:%M")
    return f"{when} (taken)" if row.captured_at else f"{when} (file date)"


def _code(text: str) -> str:
    """Inline code in markdown (a query keeps its `*` and quotes); backticks cannot nest."""
    return "`" + text.replace("`", "'") + "`"


def _escape(value: str) -> str:
    """Plain text inside markdown: file names may hold `*`, `_`, `<` and such."""
    return "".join(f"\\{c}" if c in "\\`*_{}[]<>()#+-.!|~" else c for c in value)
