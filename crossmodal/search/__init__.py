"""Searching: queries (query), the one search entry point (searcher), text tables of labels and
captions (labels), labelling the whole index (classification), near-duplicates (duplicates)."""

from crossmodal.search.searcher import (
    MAX_K,
    MAX_OFFSET,
    Searcher,
    SearchHit,
    SearchOptions,
    TextHit,
    zero_shot,
)

__all__ = ["MAX_K", "MAX_OFFSET", "SearchHit", "SearchOptions", "Searcher", "TextHit", "zero_shot"]
