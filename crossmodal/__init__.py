"""crossmodal: cross-modal photo search with open_clip embeddings stored in LanceDB.

    from crossmodal import SearchOptions, Searcher, Store, index_folder, load_encoder
    encoder = load_encoder("ViT-B-32:laion2b_s34b_b79k")
    store = Store.open("photos.db", create=True)
    index_folder("~/Pictures", store, encoder)
    hits = Searcher(store, encoder).search("a dog on the beach", SearchOptions(k=5))

Importing the package is light: torch and open_clip load only when an encoder is created. The
names below are the public surface; type checkers see their real types.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # models and encoders
    "load_encoder": "crossmodal.model.encoder",
    "EncoderConfig": "crossmodal.model.encoder",
    "ClipEncoder": "crossmodal.model.encoder",
    "parse_model_spec": "crossmodal.model.specs",
    "ModelSpec": "crossmodal.model.specs",
    "ModelIdentity": "crossmodal.model.specs",
    "Encoder": "crossmodal.model.specs",
    "DEFAULT_MODEL": "crossmodal.model.specs",
    "SHIPPED_MODEL": "crossmodal.model.specs",
    # files and images
    "discover": "crossmodal.media.files",
    "ImageFile": "crossmodal.media.files",
    "FailedFile": "crossmodal.media.files",
    "decode_image": "crossmodal.media.images",
    "DecodedImage": "crossmodal.media.images",
    "write_sample": "crossmodal.evaluate.synthetic",
    "SampleFolder": "crossmodal.evaluate.synthetic",
    # the database
    "Store": "crossmodal.store",
    "ImageRow": "crossmodal.store",
    "IndexPolicy": "crossmodal.store.records",
    "IndexState": "crossmodal.store.records",
    # indexing
    "index_folder": "crossmodal.indexing",
    "IndexConfig": "crossmodal.indexing",
    "IndexProgress": "crossmodal.indexing",
    "IndexReport": "crossmodal.indexing",
    # searching
    "Searcher": "crossmodal.search",
    "SearchHit": "crossmodal.search",
    "SearchOptions": "crossmodal.search",
    "TextHit": "crossmodal.search",
    "Query": "crossmodal.search.query",
    "parse_query": "crossmodal.search.query",
    "Filters": "crossmodal.store.filters",
    "Orientation": "crossmodal.store.filters",
    "parse_date": "crossmodal.store.filters",
    "find_duplicates": "crossmodal.search.duplicates",
    "DuplicateGroup": "crossmodal.search.duplicates",
    # labels and captions (text tables)
    "add_texts": "crossmodal.search.labels",
    "read_texts": "crossmodal.search.labels",
    "label_index": "crossmodal.search.classification",
    "LabelReport": "crossmodal.search.classification",
    # evaluation and fine-tuning
    "evaluate_retrieval": "crossmodal.evaluate.evaluation",
    "read_captions": "crossmodal.media.captions",
    "finetune": "crossmodal.model.training",
    "FinetuneConfig": "crossmodal.model.training",
    # errors
    "CrossmodalError": "crossmodal.errors",
    "DatabaseBusyError": "crossmodal.store.lock",
    "FilterError": "crossmodal.errors",
    "ImageDecodeError": "crossmodal.errors",
    "ModelLoadError": "crossmodal.errors",
    "ModelMismatchError": "crossmodal.errors",
    "ModelSpecError": "crossmodal.errors",
    "QuerySyntaxError": "crossmodal.search.query",
    "StoreError": "crossmodal.errors",
    "TableNotFoundError": "crossmodal.errors",
}

__all__ = [
    "ClipEncoder",
    "CrossmodalError",
    "DEFAULT_MODEL",
    "DatabaseBusyError",
    "DecodedImage",
    "DuplicateGroup",
    "Encoder",
    "EncoderConfig",
    "FailedFile",
    "FilterError",
    "Filters",
    "FinetuneConfig",
    "ImageDecodeError",
    "ImageFile",
    "ImageRow",
    "IndexConfig",
    "IndexPolicy",
    "IndexProgress",
    "IndexReport",
    "IndexState",
    "LabelReport",
    "ModelIdentity",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelSpec",
    "ModelSpecError",
    "Orientation",
    "Query",
    "QuerySyntaxError",
    "SHIPPED_MODEL",
    "SampleFolder",
    "SearchHit",
    "SearchOptions",
    "Searcher",
    "Store",
    "StoreError",
    "TableNotFoundError",
    "TextHit",
    "add_texts",
    "decode_image",
    "discover",
    "evaluate_retrieval",
    "find_duplicates",
    "finetune",
    "index_folder",
    "label_index",
    "load_encoder",
    "parse_date",
    "parse_model_spec",
    "parse_query",
    "read_captions",
    "read_texts",
    "write_sample",
]  # = sorted(_EXPORTS); a literal, so type checkers see the exports

if TYPE_CHECKING:  # what mypy and editors see; at run time each name loads on first use
    from crossmodal.errors import (
        CrossmodalError,
        FilterError,
        ImageDecodeError,
        ModelLoadError,
        ModelMismatchError,
        ModelSpecError,
        StoreError,
        TableNotFoundError,
    )
    from crossmodal.evaluate.evaluation import evaluate_retrieval
    from crossmodal.evaluate.synthetic import SampleFolder, write_sample
    from crossmodal.indexing import IndexConfig, IndexProgress, IndexReport, index_folder
    from crossmodal.media.captions import read_captions
    from crossmodal.media.files import FailedFile, ImageFile, discover
    from crossmodal.media.images import DecodedImage, decode_image
    from crossmodal.model.encoder import ClipEncoder, EncoderConfig, load_encoder
    from crossmodal.model.specs import (
        DEFAULT_MODEL,
        SHIPPED_MODEL,
        Encoder,
        ModelIdentity,
        ModelSpec,
        parse_model_spec,
    )
    from crossmodal.model.training import FinetuneConfig, finetune
    from crossmodal.search import Searcher, SearchHit, SearchOptions, TextHit
    from crossmodal.search.classification import LabelReport, label_index
    from crossmodal.search.duplicates import DuplicateGroup, find_duplicates
    from crossmodal.search.labels import add_texts, read_texts
    from crossmodal.search.query import Query, QuerySyntaxError, parse_query
    from crossmodal.store import ImageRow, Store
    from crossmodal.store.filters import Filters, Orientation, parse_date
    from crossmodal.store.lock import DatabaseBusyError
    from crossmodal.store.records import IndexPolicy, IndexState


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crossmodal' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
