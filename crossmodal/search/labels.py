"""Text tables: labels and captions read from a file, encoded, and stored for image -> text search."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from crossmodal.errors import CrossmodalError
from crossmodal.model.specs import Encoder
from crossmodal.store import Store

DEFAULT_TABLE = "labels"  # the text table of labels, for classification
CAPTIONS_TABLE = "captions"  # the text table of captions, for caption retrieval


def read_texts(path: str | Path) -> list[str]:
    """One label or caption per line; blank lines and lines starting with '#' are ignored.

    Repeated lines are kept once, in first-seen order.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CrossmodalError(f"cannot read texts from {path}: {exc}") from exc
    texts = [line.strip() for line in lines]
    return list(dict.fromkeys(t for t in texts if t and not t.startswith("#")))


def add_texts(
    store: Store, encoder: Encoder, texts: Sequence[str], table: str = DEFAULT_TABLE
) -> int:
    """Encode texts and add them to a text table (created on first use). Returns the count."""
    unique = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
    if not unique:
        raise CrossmodalError("no texts to add: the input holds no non-empty line")
    text_table = store.texts(table, encoder.identity, create=True)
    text_table.add(unique, encoder.encode_texts(unique))
    return len(unique)
