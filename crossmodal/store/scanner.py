"""Nearest-neighbour queries on Lance's own scanner, for the tables of `crossmodal.store.tables`.

LanceDB's synchronous query builder answers through its background event loop (~0.3 ms a round
trip here, several a query: 2-5 ms a search at 1M rows, BENCHMARKS.md "The store on Lance's
scanner"); Lance's scanner runs the same plan on the same files and indexes directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from crossmodal.store.records import IndexPolicy


def nearest(
    dataset: Any,
    query: np.ndarray,
    k: int,
    columns: list[str],
    policy: IndexPolicy,
    where: str | None,
    probes: int | None,
    expand: bool,
) -> pa.Table:
    """The `k` rows of `dataset` (a `lance.LanceDataset`) closest to `query` by cosine distance,
    with `columns` and `_distance`, among the rows `where` keeps (prefiltered). `probes`
    partitions are searched (None: every row kept, exactly), or from `probes` on as many as it
    takes to find `k` rows when `expand`. With an index, the best `refine_factor * k`
    candidates are re-scored on their full vectors; an exact scan ignores it."""
    search: dict[str, Any] = {"column": "vector", "q": query, "k": k, "metric": "cosine"}
    if policy.refine_factor:
        search["refine_factor"] = policy.refine_factor
    if probes is None:
        search["use_index"] = False
    elif expand:  # search_effort 0: start at the minimum, then widen only as needed
        search |= {"minimum_nprobes": probes, "search_effort": 0.0}
    else:
        search["nprobes"] = probes
    return dataset.to_table(
        nearest=search, columns=[*columns, "_distance"], filter=where, prefilter=True
    )
