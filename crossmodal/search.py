"""Search: queries (text, image, vector) -> encoder -> nearest rows -> typed hits.

Also the image -> text direction: which labels or captions of a text table fit an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from crossmodal.errors import CrossmodalError
from crossmodal.images import decode_image
from crossmodal.models import Encoder
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


class Searcher:
    """Searches one database with one encoder; checks once that the two belong together."""

    def __init__(self, store: Store, encoder: Encoder) -> None:
        self.store = store
        self.encoder = encoder
        self.images: ImageTable = store.images(encoder.identity)

    def by_text(self, text: str, k: int = 10, where: str | None = None) -> list[SearchHit]:
        if not text.strip():
            raise CrossmodalError("the text query is empty; type what the photo should show")
        return self.by_vector(self.encoder.encode_texts([text])[0], k, where)

    def by_image(self, image: ImageQuery, k: int = 10, where: str | None = None) -> list[SearchHit]:
        return self.by_vector(self.image_vector(image), k, where)

    def by_vector(
        self, vector: np.ndarray, k: int = 10, where: str | None = None
    ) -> list[SearchHit]:
        vector = np.asarray(vector, np.float32)
        if vector.shape != (self.encoder.dim,):
            raise CrossmodalError(
                f"query vector has shape {vector.shape}, the table holds {self.encoder.dim}-d vectors"
            )
        return [SearchHit(row, score) for row, score in self.images.nearest(vector, k, where)]

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
