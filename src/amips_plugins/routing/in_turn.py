"""Two rankings taken in turn: probe lists from both routers, alternately."""

from __future__ import annotations

import numpy as np

from .. import _core

__all__ = ["InTurn"]


class InTurn:
    """The first ``nprobe`` distinct lists of first[0], second[0], first[1], second[1], ... per
    query: a learned ranking backed by faiss's (``probe_union``) keeps what either finds first.
    With one probe only the first router runs."""

    member = None  # built from the index's settings

    def __init__(self, first, second):
        self.first, self.second = first, second
        self.dim, self.num_outputs = first.dim, first.num_outputs

    def rank(self, queries: np.ndarray, nprobe: int, index, params) -> np.ndarray:
        lists = self.first.rank(queries, nprobe, index, params)
        if nprobe == 1:
            return lists
        return take_in_turn(lists, self.second.rank(queries, nprobe, index, params), nprobe)

    def cost(self, index, nprobe: int) -> tuple[int, int]:
        flops, distances = self.first.cost(index, nprobe)
        if nprobe == 1:
            return flops, distances
        more_flops, more_distances = self.second.cost(index, nprobe)
        return flops + more_flops, distances + more_distances


def take_in_turn(a: np.ndarray, b: np.ndarray, count: int) -> np.ndarray:
    """Per row, the first ``count`` distinct lists of a[0], b[0], a[1], b[1], ... (n, count),
    -1 (no list) skipped and padding the rest."""
    return _core.take_in_turn(
        np.ascontiguousarray(a, dtype=np.int64), np.ascontiguousarray(b, dtype=np.int64), count
    )
