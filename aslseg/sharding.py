"""Work split over torchrun ranks (one process: all of it, in order).

Per-slice and per-volume work (segmenter and SAM predictions, pseudo-labels, test volumes) is strided over the
ranks and gathered back in index order with ``common.runtime.gather_by_index``, so every rank ends with the same
full arrays (each item computed once) and a one-process run computes exactly what it computed before.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from common.runtime import dist_info, gather_by_index, shard

__all__ = ["rank_items", "map_sharded"]


def rank_items(n: int) -> np.ndarray:
    """Indices 0 .. n-1 this rank handles: ``rank, rank + world, ...`` (``arange(n)`` in one process)."""
    return np.asarray(shard(np.arange(n, dtype=np.int64)), dtype=np.int64)


def map_sharded(n: int, fn: Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, ...]]
                ) -> np.ndarray | tuple[np.ndarray, ...]:
    """``fn(indices)`` on this rank's share of ``range(n)`` (one array, or a tuple of arrays, each with one row per
    index), gathered from every rank in index order: the arrays ``fn(arange(n))`` would give."""
    idx = rank_items(n)
    out = fn(idx)
    parts = out if isinstance(out, tuple) else (out,)
    if not dist_info().distributed:
        return out
    _, *gathered = gather_by_index(idx, *parts)
    return tuple(gathered) if isinstance(out, tuple) else gathered[0]
