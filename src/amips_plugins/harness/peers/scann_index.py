"""Google's ScaNN (``pip install scann``): a partition tree, anisotropic hashing, exact reorder."""

from __future__ import annotations

import math

import numpy as np


class ScaNN:
    """ScaNN with ``dot_product``, configured as its docs advise: a tree of ``num_leaves``
    partitions (default 2 sqrt(N)), asymmetric hashing of 2 dimensions per block with the
    anisotropic loss, then exact re-ordering. The anisotropic threshold is absolute, so it is
    0.2 times the median key norm (0.2 for unit keys). Below 20,000 keys, brute force.
    ``param``: (leaves_to_search, pre_reorder_num_neighbors)."""

    param_name = "leaves, reorder"
    network_flops = 0

    def __init__(
        self,
        num_threads: int,
        num_leaves: int | None = None,
        params=((8, 100), (32, 200), (64, 500), (128, 1000)),
    ):
        self.num_threads, self.num_leaves, self.params = num_threads, num_leaves, tuple(params)
        self.name = "ScaNN dot_product"

    def build(self, keys):
        import scann

        n, self.distance_dim = keys.shape
        self.leaves = self.num_leaves or max(1, round(2 * math.sqrt(n)))
        threshold = 0.2 * float(np.median(np.linalg.norm(keys, axis=1)))
        builder = scann.scann_ops_pybind.builder(keys, 10, "dot_product")
        if n < 20_000:
            builder = builder.score_brute_force()
        else:
            builder = (
                builder.tree(
                    num_leaves=self.leaves,
                    num_leaves_to_search=min(self.leaves, 32),
                    training_sample_size=min(n, 250_000),
                )
                .score_ah(2, anisotropic_quantization_threshold=threshold)
                .reorder(100)
            )
        self.index = builder.build()
        self.index.set_num_threads(self.num_threads)

    def search(self, queries, k, param):
        leaves, reorder = param
        settings = {
            "final_num_neighbors": k,
            "pre_reorder_num_neighbors": max(reorder, k),
            "leaves_to_search": min(leaves, self.leaves),
        }
        if len(queries) == 1:  # its own one-query call
            ids, _ = self.index.search(queries[0], **settings)
            return np.asarray(ids, np.int64)[None], math.nan
        ids, _ = self.index.search_batched_parallel(queries, **settings)
        return np.asarray(ids, np.int64), math.nan
