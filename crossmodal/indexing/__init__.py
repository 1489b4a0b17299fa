"""Indexing: a folder of photos -> decoding threads (pipeline) -> encoder -> the image table
(folders: what changed, and one atomic upsert per batch)."""

from crossmodal.indexing.folders import IndexConfig, IndexProgress, IndexReport, index_folder

__all__ = ["IndexConfig", "IndexProgress", "IndexReport", "index_folder"]
