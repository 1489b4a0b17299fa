"""crossmodal: cross-modal photo search with open_clip embeddings stored in LanceDB.

    from crossmodal import load_encoder, Store, index_folder, Searcher
    encoder = load_encoder("ViT-B-32:laion2b_s34b_b79k")
    store = Store.open("photos.db", create=True)
    index_folder("~/Pictures", store, encoder)
    hits = Searcher(store, encoder).by_text("a dog on the beach")

Importing the package is light: torch and open_clip load only when an encoder is created.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_encoder": "crossmodal.encoder",
    "EncoderConfig": "crossmodal.encoder",
    "ClipEncoder": "crossmodal.encoder",
    "parse_model_spec": "crossmodal.models",
    "ModelSpec": "crossmodal.models",
    "ModelIdentity": "crossmodal.models",
    "Encoder": "crossmodal.models",
    "DEFAULT_MODEL": "crossmodal.models",
    "discover": "crossmodal.files",
    "ImageFile": "crossmodal.files",
    "decode_image": "crossmodal.images",
    "DecodedImage": "crossmodal.images",
    "Store": "crossmodal.store",
    "ImageRow": "crossmodal.store",
    "index_folder": "crossmodal.indexing",
    "IndexConfig": "crossmodal.indexing",
    "IndexReport": "crossmodal.indexing",
    "Searcher": "crossmodal.search",
    "SearchHit": "crossmodal.search",
    "TextHit": "crossmodal.search",
    "classify": "crossmodal.search",
    "SearchOptions": "crossmodal.search",
    "Query": "crossmodal.query",
    "parse_query": "crossmodal.query",
    "Filters": "crossmodal.filters",
    "IndexPolicy": "crossmodal.records",
    "find_duplicates": "crossmodal.duplicates",
    "DuplicateGroup": "crossmodal.duplicates",
    "label_index": "crossmodal.classification",
    "add_texts": "crossmodal.labels",
    "read_texts": "crossmodal.labels",
    "CrossmodalError": "crossmodal.errors",
    "ModelMismatchError": "crossmodal.errors",
    "StoreError": "crossmodal.errors",
    "ImageDecodeError": "crossmodal.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crossmodal' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
