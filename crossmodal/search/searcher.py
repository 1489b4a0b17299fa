"""Search: a query (text, image, composition or vector) -> encoder -> nearest rows -> typed hits.

`Searcher.search` is the one entry point the CLI, the demo, the notebooks and users call;
`by_text`, `by_image`, `by_vector` and `like` are one-line conveniences over it. The image ->
text direction (which labels or captions fit a photo) is `Searcher.classify` and `captions`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from crossmodal.errors import CrossmodalError
from crossmodal.media.files import printable_path
from crossmodal.media.images import decode_image
from crossmodal.model.specs import Encoder
from crossmodal.search.labels import CAPTIONS_TABLE, DEFAULT_TABLE
from crossmodal.search.query import Query, parse_query
from crossmodal.store import IMAGES, ImageRow, ImageTable, Store
from crossmodal.store.filters import Filters

MAX_K = 10_000  # hits per page
MAX_OFFSET = 2**31 - 1  # LanceDB takes the offset as a 32-bit count

ImageInput = Image.Image | str | os.PathLike[str]
# str: the CLI's query syntax; Path or PIL image: an example photo; array: a vector as it is
QueryInput = Query | str | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class SearchHit:
    row: ImageRow
    score: float  # cosine similarity, -1..1

    @property
    def path(self) -> str:
        return self.row.path


@dataclass(frozen=True)
class TextHit:
    text: str
    score: float  # cosine similarity
    probability: float | None = None  # softmax over the candidate set, for classification


@dataclass(frozen=True)
class SearchOptions:
    """Which page of which hits a search returns. Invalid values are refused when made."""

    k: int = 10  # hits per page
    offset: int = 0  # hits to skip: page n (from 0) starts at n * k
    min_score: float | None = None  # drop hits less similar than this cosine similarity
    filters: Filters = field(default_factory=Filters)
    hybrid: bool = False  # fuse with keyword search on file, folder and label names (RRF)
    exclude: tuple[str, ...] = ()  # paths never returned, e.g. the photo of "more like this"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not 1 <= self.k <= MAX_K:
            raise CrossmodalError(f"k must be from 1 to {MAX_K:,} hits per page, not {self.k!r}")
        if isinstance(self.offset, bool) or not 0 <= self.offset <= MAX_OFFSET:
            raise CrossmodalError(f"offset must be from 0 to {MAX_OFFSET:,}, not {self.offset!r}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise CrossmodalError(
                f"min_score is a cosine similarity from -1 to 1, not {self.min_score!r}"
            )


class Searcher:
    """Searches one database with one encoder; checks once that the two belong together."""

    def __init__(self, store: Store, encoder: Encoder) -> None:
        self.store = store
        self.encoder = encoder
        if IMAGES in store.table_names():
            _ = self.images  # refuse another model's table now, not at the first search

    @functools.cached_property
    def images(self) -> ImageTable:
        """The image table, refused with the command that fixes it if another model built it."""
        return self.store.images(self.encoder.identity)

    # -- photos for a query ---------------------------------------------------------------------

    def search(self, query: QueryInput, options: SearchOptions | None = None) -> list[SearchHit]:
        """The photos nearest to `query`, best first: page `options.offset // options.k`.

        A string is read with `parse_query`: plain words are one text query, and
        `"beach" + 0.5*"sunset" - "people"` or `@photo.jpg + "at night"` compose. A `Path` or a
        PIL image is an example photo; a vector (one the caller encoded, or a stored one) is
        searched as it is. When nothing comes back, `explain_empty` says why.
        """
        options = options or SearchOptions()
        if options.filters.label is not None and not self.images.has_labels:
            raise CrossmodalError(
                f"the photos have no labels yet.\nFix: label them with `crossmodal classify "
                f"--all --db {self.store.db_dir}` (after `crossmodal labels add LABELS.txt`)"
            )
        vector, keywords = self._vector_and_keywords(query)
        # excluded paths may sit anywhere before or on the page: fetch from the top, drop, slice
        wanted = options.offset + options.k
        fetch = wanted + len(options.exclude)
        start = 0 if options.exclude else options.offset
        limit = fetch - start
        if options.hybrid and keywords:
            found = self.images.hybrid(vector, keywords, limit, options.filters, offset=start)
        else:
            found = self.images.nearest(vector, limit, options.filters, offset=start)
        hits = [SearchHit(row, score) for row, score in found if row.path not in options.exclude]
        if options.exclude:
            hits = hits[options.offset : wanted]
        if options.min_score is not None:
            hits = [h for h in hits if h.score >= options.min_score]
        return hits[: options.k]

    def by_text(self, text: str, options: SearchOptions | None = None) -> list[SearchHit]:
        """Photos that show `text`, read as plain words (no composition syntax)."""
        return self.search(Query.text(text), options)

    def by_image(self, image: ImageInput, options: SearchOptions | None = None) -> list[SearchHit]:
        """Photos that look like `image` (a file path or a PIL image)."""
        return self.search(image if isinstance(image, Image.Image) else Path(image), options)

    def by_vector(
        self, vector: np.ndarray, options: SearchOptions | None = None
    ) -> list[SearchHit]:
        return self.search(np.asarray(vector), options)

    def like(
        self, path: str | os.PathLike[str], options: SearchOptions | None = None
    ) -> list[SearchHit]:
        """More like this: neighbours of a photo already in the index, the photo left out."""
        key = printable_path(str(Path(path).expanduser().resolve()))
        record = self.images.get(key)
        if record is None:
            raise CrossmodalError(f"{key} is not in the index; search with it by_image instead")
        options = options or SearchOptions()
        return self.search(record[1], replace(options, exclude=(*options.exclude, key)))

    def explain_empty(self, options: SearchOptions | None = None) -> str:
        """Why a search with `options` found nothing, and what to change."""
        options = options or SearchOptions()
        total = self.images.count()
        if total == 0:
            return (
                f"the index in {self.store.db_dir} holds no photos yet.\n"
                f"Fix: `crossmodal index PHOTOS_DIR --db {self.store.db_dir}`"
            )
        matching = total
        if options.filters.active:
            matching = self.images.count(options.filters)
            if matching == 0:
                return self._explain_filters(options.filters)
        if options.offset >= matching:
            return (
                f"only {matching:,} photo(s) match, and the page starts at hit "
                f"{options.offset + 1:,}; go back to an earlier page"
            )
        if options.min_score is not None:
            return (
                f"no photo scores {options.min_score:.2f} or more on this page; lower the minimum "
                "score"
            )
        return "no photo matches"

    def _explain_filters(self, filters: Filters) -> str:
        for name, part in filters.parts():
            if self.images.count(part) == 0:
                if name == "label":
                    known = ", ".join(self.images.label_values()[:10]) or "none yet"
                    return f"no indexed photo is labelled {filters.label!r}; labels: {known}"
                if name == "folder":
                    return (
                        f"no indexed photo is in a folder {filters.folder!r}; give a folder path "
                        "or the name of a folder that was indexed (`crossmodal info` shows the "
                        "database)"
                    )
                return f"no indexed photo matches {part.describe()}"
        return f"no photo matches all of: {filters.describe()} (each one alone matches some)"

    # -- vectors --------------------------------------------------------------------------------

    def _vector_and_keywords(self, query: QueryInput) -> tuple[np.ndarray, str]:
        if isinstance(query, np.ndarray):
            return self._checked(query), ""
        if isinstance(query, Image.Image):
            return self.encoder.encode_images([query.convert("RGB")])[0], ""
        if isinstance(query, Path):
            query = Query.image(query)
        parsed = parse_query(query) if isinstance(query, str) else query
        return self.query_vector(parsed), parsed.keywords

    def query_vector(self, query: Query) -> np.ndarray:
        """The unit vector of a query: the weighted sum of its terms' unit vectors, normalised.

        Texts are encoded in one batch and images in another; an image already in the index
        uses its stored vector instead of being decoded again.
        """
        texts = query.texts
        text_vectors = iter(self.encoder.encode_texts(texts) if texts else [])
        stored = {}
        for term in query.terms:
            if term.image is not None and term.image not in stored:
                record = self.images.get(printable_path(str(Path(term.image).resolve())))
                if record is not None:
                    stored[term.image] = record[1]
        to_encode = list(
            dict.fromkeys(t.image for t in query.terms if t.image and t.image not in stored)
        )
        encoded = dict(zip(to_encode, self._encode_files(to_encode), strict=True))
        total = np.zeros(self.encoder.dim, np.float64)
        for term in query.terms:
            if term.text is not None:
                vector = next(text_vectors)
            else:
                assert term.image is not None
                vector = stored.get(term.image, encoded.get(term.image))
            total += term.weight * _unit(np.asarray(vector, np.float64))
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise CrossmodalError(
                f"the query {query.describe()} cancels itself out (its vector is zero); "
                "change a weight or a term"
            )
        return (total / norm).astype(np.float32)

    def image_vector(self, image: ImageInput) -> np.ndarray:
        """The unit vector of one photo (a file path or a PIL image)."""
        picture = image if isinstance(image, Image.Image) else decode_image(Path(image)).image
        return self.encoder.encode_images([picture.convert("RGB")])[0]

    def _encode_files(self, paths: Sequence[str]) -> np.ndarray:
        if not paths:
            return np.zeros((0, self.encoder.dim), np.float32)
        return self.encoder.encode_images([decode_image(p).image for p in paths])

    def _checked(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector, np.float32)
        if vector.shape != (self.encoder.dim,):
            raise CrossmodalError(
                f"query vector has shape {vector.shape}, the table holds {self.encoder.dim}-d vectors"
            )
        return vector

    # -- texts for a photo ----------------------------------------------------------------------

    def classify(
        self, image: ImageInput | np.ndarray, labels: str | Sequence[str] = DEFAULT_TABLE
    ) -> list[TextHit]:
        """Zero-shot classification of one photo: every label with its probability, most
        likely first. `labels` names a text table of the database, or is a list typed on the
        spot (encoded, not stored)."""
        vector = self._photo_vector(image)
        if isinstance(labels, str):
            texts, label_vectors = self.store.texts(labels, self.encoder.identity).all()
        else:
            texts = list(dict.fromkeys(t.strip() for t in labels if t.strip()))
            label_vectors = self.encoder.encode_texts(texts) if texts else np.zeros((0, 0))
        return zero_shot(self.encoder, vector, texts, label_vectors)

    def captions(
        self, image: ImageInput | np.ndarray, table: str = CAPTIONS_TABLE, k: int = 5
    ) -> list[TextHit]:
        """Caption retrieval: the k texts of a text table closest to the photo."""
        vector = self._photo_vector(image)
        found = self.store.texts(table, self.encoder.identity).nearest(vector, k)
        return [TextHit(text, score) for text, score in found]

    def _photo_vector(self, image: ImageInput | np.ndarray) -> np.ndarray:
        if isinstance(image, np.ndarray):
            return self._checked(image)
        return self.image_vector(image)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def zero_shot(
    encoder: Encoder, image_vector: np.ndarray, labels: Sequence[str], label_vectors: np.ndarray
) -> list[TextHit]:
    """Softmax of CLIP's scaled similarities over the candidate labels, most likely first."""
    if len(labels) == 0:
        raise CrossmodalError(
            "no candidate labels to classify into; type a few (e.g. 'cat, dog, car') or add "
            "a label table with `crossmodal labels add LABELS.txt`"
        )
    similarities = label_vectors @ np.asarray(image_vector, np.float32)
    logits = encoder.logit_scale * similarities.astype(np.float64)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities, kind="stable")
    return [TextHit(labels[i], float(similarities[i]), float(probabilities[i])) for i in order]
