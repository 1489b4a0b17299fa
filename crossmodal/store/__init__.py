"""Storage: the one package that talks to LanceDB.

Tables remember which model made their vectors (in the Arrow schema metadata) and refuse to be
written or searched with another. Callers get and give typed rows, never LanceDB objects.
"""

from crossmodal.store.database import FILE_FORMAT, IMAGES, TEXT_PREFIX, Store
from crossmodal.store.records import (
    LABEL_FIELDS,
    META_KEY,
    SCHEMA_VERSION,
    ImageRow,
    IndexPolicy,
    IndexState,
    TableInfo,
    arrow_vectors,
    image_rows,
    image_schema,
    numpy_vectors,
    row_dict,
    text_schema,
)
from crossmodal.store.tables import ImageTable, TextTable
from crossmodal.store.upkeep import FTS_COLUMNS, SCALAR_INDEXES

__all__ = [
    "FILE_FORMAT",
    "FTS_COLUMNS",
    "IMAGES",
    "LABEL_FIELDS",
    "META_KEY",
    "SCALAR_INDEXES",
    "SCHEMA_VERSION",
    "TEXT_PREFIX",
    "ImageRow",
    "ImageTable",
    "IndexPolicy",
    "IndexState",
    "Store",
    "TableInfo",
    "TextTable",
    "arrow_vectors",
    "image_rows",
    "image_schema",
    "numpy_vectors",
    "row_dict",
    "text_schema",
]
