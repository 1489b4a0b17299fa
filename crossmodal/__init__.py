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
    "load_encoder": "crossmodal.encoder",
    "EncoderConfig": "crossmodal.encoder",
    "ClipEncoder": "crossmodal.encoder",
    "parse_model_spec": "crossmodal.models",
    "ModelSpec": "crossmodal.models",
    "ModelIdentity": "crossmodal.models",
    "Encoder": "crossmodal.models",
    "DEFAULT_MODEL": "crossmodal.models",
    "SHIPPED_MODEL": "crossmodal.models",
    # files and images
    "discover": "crossmodal.files",
    "ImageFile": "crossmodal.files",
    "FailedFile": "crossmodal.files",
    "decode_image": "crossmodal.images",
    "DecodedImage": "crossmodal.images",
    "write_sample": "crossmodal.synthetic",
    "SampleFolder": "crossmodal.synthetic",
    # the database
    "Store": "crossmodal.store",
    "ImageRow": "crossmodal.store",
    "IndexPolicy": "crossmodal.records",
    "IndexState": "crossmodal.records",
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
    "Query": "crossmodal.query",
    "parse_query": "crossmodal.query",
    "Filters": "crossmodal.filters",
    "Orientation": "crossmodal.filters",
    "parse_date": "crossmodal.filters",
    "find_duplicates": "crossmodal.duplicates",
    "DuplicateGroup": "crossmodal.duplicates",
    # labels and captions (text tables)
    "add_texts": "crossmodal.labels",
    "read_texts": "crossmodal.labels",
    "label_index": "crossmodal.classification",
    "LabelReport": "crossmodal.classification",
    # evaluation and fine-tuning
    "evaluate_retrieval": "crossmodal.evaluation",
    "read_captions": "crossmodal.captions",
    "finetune": "crossmodal.training",
    "FinetuneConfig": "crossmodal.training",
    # errors
    "CrossmodalError": "crossmodal.errors",
    "DatabaseBusyError": "crossmodal.lock",
    "FilterError": "crossmodal.errors",
    "ImageDecodeError": "crossmodal.errors",
    "ModelLoadError": "crossmodal.errors",
    "ModelMismatchError": "crossmodal.errors",
    "ModelSpecError": "crossmodal.errors",
    "QuerySyntaxError": "crossmodal.query",
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
    from crossmodal.captions import read_captions
    from crossmodal.classification import LabelReport, label_index
    from crossmodal.duplicates import DuplicateGroup, find_duplicates
    from crossmodal.encoder import ClipEncoder, EncoderConfig, load_encoder
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
    from crossmodal.evaluation import evaluate_retrieval
    from crossmodal.files import FailedFile, ImageFile, discover
    from crossmodal.filters import Filters, Orientation, parse_date
    from crossmodal.images import DecodedImage, decode_image
    from crossmodal.indexing import IndexConfig, IndexProgress, IndexReport, index_folder
    from crossmodal.labels import add_texts, read_texts
    from crossmodal.lock import DatabaseBusyError
    from crossmodal.models import (
        DEFAULT_MODEL,
        SHIPPED_MODEL,
        Encoder,
        ModelIdentity,
        ModelSpec,
        parse_model_spec,
    )
    from crossmodal.query import Query, QuerySyntaxError, parse_query
    from crossmodal.records import IndexPolicy, IndexState
    from crossmodal.search import Searcher, SearchHit, SearchOptions, TextHit
    from crossmodal.store import ImageRow, Store
    from crossmodal.synthetic import SampleFolder, write_sample
    from crossmodal.training import FinetuneConfig, finetune


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crossmodal' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
