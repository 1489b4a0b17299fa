"""Search: queries (text, image, composed, vector) -> encoder -> nearest rows -> typed hits.

Also the image -> text direction: which labels or captions of a text table fit an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from crossmodal.errors import CrossmodalError
from crossmodal.filters import Filters
from crossmodal.images import decode_image
from crossmodal.models import Encoder
from crossmodal.query import Query, parse_query
from crossmodal.store import ImageRow, ImageTable, Store, TextTable


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


ImageQuery = Image.Image | str | Path


@dataclass(frozen=True)
class SearchOptions:
    k: int = 10  # hits per page
    offset: int = 0  # hits to skip: page n (from 0) starts at n * k
    min_score: float | None = None  # drop hits less similar than this cosine similarity
    filters: Filters = Filters()
    hybrid: bool = False  # fuse with keyword search on file, folder and label names (RRF)


class Searcher:
    """Searches one database with one encoder; checks once that the two belong together."""

    def __init__(self, store: Store, encoder: Encoder) -> None:
        self.store = store
        self.encoder = encoder
        self.images: ImageTable = store.images(encoder.identity)

    def search(
        self, query: Query | str | np.ndarray, options: SearchOptions | None = None
    ) -> list[SearchHit]:
        """Search with a text, an image path, a weighted composition of both, or a vector.

        A string is read with `parse_query`: plain words are one text query, and
        `"beach" + 0.5*"sunset" - "people"` or `@photo.jpg + "at night"` compose. A vector
        (one the caller encoded, or a stored one) is searched as it is.
        """
        options = options or SearchOptions()
        if options.k < 1 or options.offset < 0:
            raise CrossmodalError("k must be at least 1 and offset at least 0")
        where = options.filters.to_sql()
        if options.filters.uses_labels and not self.images.has_labels:
            raise CrossmodalError(
                f"the photos have no labels yet.\nFix: label them with `crossmodal classify "
                f"--all --db {self.store.db_dir}` (after `crossmodal labels add LABELS.txt`)"
            )
        if isinstance(query, np.ndarray):
            vector, keywords = self._checked(query), ""
        else:
            query = parse_query(query) if isinstance(query, str) else query
            vector, keywords = self.query_vector(query), query.keywords
        if options.hybrid and keywords:
            found = self.images.hybrid(vector, keywords, options.k, where, offset=options.offset)
        else:
            found = self.images.nearest(vector, options.k, where, offset=options.offset)
        hits = [SearchHit(row, score) for row, score in found]
        if options.min_score is not None:
            hits = [h for h in hits if h.score >= options.min_score]
        return hits

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
                record = self.images.get(str(Path(term.image).resolve()))
                if record is not None:
                    stored[term.image] = record[1]
        to_encode = list(
            dict.fromkeys(t.image for t in query.terms if t.image and t.image not in stored)
        )
        encoded = dict(zip(to_encode, self._encode_images(to_encode), strict=True))
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

    def _encode_images(self, paths: Sequence[str]) -> np.ndarray:
        if not paths:
            return np.zeros((0, self.encoder.dim), np.float32)
        return self.encoder.encode_images([decode_image(p).image for p in paths])

    def by_text(self, text: str, k: int = 10, where: str | None = None) -> list[SearchHit]:
        if not text.strip():
            raise CrossmodalError("the text query is empty; type what the photo should show")
        return self.by_vector(self.encoder.encode_texts([text])[0], k, where)

    def by_image(self, image: ImageQuery, k: int = 10, where: str | None = None) -> list[SearchHit]:
        return self.by_vector(self.image_vector(image), k, where)

    def by_vector(
        self, vector: np.ndarray, k: int = 10, where: str | None = None
    ) -> list[SearchHit]:
        found = self.images.nearest(self._checked(vector), k, where)
        return [SearchHit(row, score) for row, score in found]

    def _checked(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector, np.float32)
        if vector.shape != (self.encoder.dim,):
            raise CrossmodalError(
                f"query vector has shape {vector.shape}, the table holds {self.encoder.dim}-d vectors"
            )
        return vector

    def like_indexed(self, path: str, k: int = 10) -> list[SearchHit]:
        """More like this: neighbours of an image already in the table, itself excluded."""
        record = self.images.get(path)
        if record is None:
            raise CrossmodalError(f"{path} is not in the index")
        hits = self.by_vector(record[1], k + 1)
        return [h for h in hits if h.path != path][:k]

    def image_vector(self, image: ImageQuery) -> np.ndarray:
        picture = image if isinstance(image, Image.Image) else decode_image(image).image
        return self.encoder.encode_images([picture])[0]

    def texts(self, name: str) -> TextTable:
        return self.store.texts(name, self.encoder.identity)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def classify(
    encoder: Encoder, image_vector: np.ndarray, labels: Sequence[str], label_vectors: np.ndarray
) -> list[TextHit]:
    """Zero-shot classification: softmax of CLIP's scaled similarities over the candidate labels.

    Returns every label with its probability, most likely first.
    """
    if len(labels) == 0:
        raise CrossmodalError("no candidate labels to classify into; add some first")
    similarities = label_vectors @ np.asarray(image_vector, np.float32)
    logits = encoder.logit_scale * similarities.astype(np.float64)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities, kind="stable")
    return [TextHit(labels[i], float(similarities[i]), float(probabilities[i])) for i in order]


def classify_with_table(
    encoder: Encoder, image_vector: np.ndarray, table: TextTable
) -> list[TextHit]:
    labels, vectors = table.all()
    return classify(encoder, image_vector, labels, vectors)


def classify_with_texts(
    encoder: Encoder, image_vector: np.ndarray, labels: Sequence[str]
) -> list[TextHit]:
    """Classify into labels typed on the spot, without storing them."""
    return classify(encoder, image_vector, list(labels), encoder.encode_texts(list(labels)))


def captions_for(table: TextTable, image_vector: np.ndarray, k: int = 5) -> list[TextHit]:
    """Caption retrieval: the k texts of the table closest to the image."""
    return [TextHit(text, score) for text, score in table.nearest(image_vector, k)]
