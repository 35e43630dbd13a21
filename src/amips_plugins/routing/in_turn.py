"""Two rankings taken in turn: probe lists from both routers, alternately."""

from __future__ import annotations

import numpy as np

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
    """Per row, the first ``count`` distinct entries of a[0], b[0], a[1], b[1], ... (n, count)."""
    n, width = a.shape
    merged = np.empty((n, 2 * width), np.int64)
    merged[:, 0::2], merged[:, 1::2] = a, b
    order = np.argsort(merged, axis=1, kind="stable")  # equal entries keep their turn order
    ranked = np.take_along_axis(merged, order, axis=1)
    repeat = np.zeros_like(ranked, dtype=bool)
    repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    first = np.empty_like(repeat)
    np.put_along_axis(first, order, ~repeat, axis=1)
    slot = np.cumsum(first, axis=1) - 1
    rows, cols = np.nonzero(first & (slot < count))
    out = np.full((n, count), -1, np.int64)
    out[rows, slot[rows, cols]] = merged[rows, cols]
    return out
