"""faiss's own choice of lists: the quantizer's nearest centroids to the query."""

from __future__ import annotations

import numpy as np

__all__ = ["CentroidRouter"]


class CentroidRouter:
    """The ``nprobe`` centroids the index's quantizer ranks first for q (with Xbox, for the
    augmented query), as faiss's own search chooses them; ``params.quantizer_params`` apply.
    ``on_core``: ranked by the index's ``_ranked_centroids`` where it can (beside a learned
    ranking, whose search faiss's bit-for-bit results do not bind)."""

    member = None  # the index's quantizer is all it uses

    def __init__(self, dim: int, num_outputs: int, on_core: bool = False):
        self.dim, self.num_outputs, self.on_core = dim, num_outputs, on_core

    def rank(self, queries: np.ndarray, nprobe: int, index, params) -> np.ndarray:
        if self.on_core:
            ranked = index._ranked_centroids(queries, nprobe, params)
            if ranked is not None:
                return ranked
        return centroids_for(queries, nprobe, index, params)

    def cost(self, index, nprobe: int) -> tuple[int, int]:
        return 0, index.nlist


def centroids_for(vectors: np.ndarray, nprobe: int, index, params) -> np.ndarray:
    """The quantizer's ranking of the lists for ``vectors`` (n, key dimension)."""
    if index.xbox is not None:
        vectors = index.xbox.transform_queries(vectors)
    coarse = None if params is None else params.quantizer_params
    return index.quantizer.search(vectors, nprobe, params=coarse)[1]
