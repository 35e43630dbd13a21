"""Other libraries' HNSW graphs with inner product: hnswlib, usearch, voyager."""

from __future__ import annotations

import math

import numpy as np

from ..._hnsw_file import insertion_order


class HnswlibIP:
    """``hnswlib.Index(space="ip")`` on the raw vectors (reports no distance counts)."""

    param_name = "ef"
    network_flops = 0

    def __init__(
        self,
        num_threads: int,
        M: int = 16,
        ef_construction: int = 200,
        seed: int = 100,
        params=(10, 20, 40, 100, 200, 400),
    ):
        self.num_threads, self.M, self.ef_construction, self.seed = (
            num_threads,
            M,
            ef_construction,
            seed,
        )
        self.params = tuple(params)
        self.name = f"hnswlib ip (M {M})"

    def build(self, keys):
        import hnswlib

        self.distance_dim = keys.shape[1]
        self.index = hnswlib.Index(space="ip", dim=keys.shape[1])
        self.index.init_index(
            len(keys), M=self.M, ef_construction=self.ef_construction, random_seed=self.seed
        )
        self.index.add_items(keys, num_threads=self.num_threads)

    def search(self, queries, k, param):
        self.index.set_ef(max(param, k))
        labels, _ = self.index.knn_query(queries, k=k, num_threads=self.num_threads)
        return labels.astype(np.int64), math.nan


class _GraphLibrary:
    """An HNSW of another library, searched at ``ef``, built with ``M`` and ``ef_construction``."""

    param_name = "ef"
    network_flops = 0
    label = ""

    def __init__(
        self,
        num_threads: int,
        M: int = 16,
        ef_construction: int = 200,
        params=(10, 20, 40, 100, 200, 400),
    ):
        self.num_threads, self.M, self.ef_construction = num_threads, M, ef_construction
        self.params = tuple(params)
        self.name = f"{self.label} (M {M})"


class UsearchIP(_GraphLibrary):
    """usearch's HNSW (``pip install usearch``) with metric "ip" on float32 keys, connectivity M
    and expansions ef_construction / ef, as hnswlib's."""

    label = "usearch ip"

    def build(self, keys):
        from usearch.index import Index

        self.distance_dim = keys.shape[1]
        self.index = Index(
            ndim=keys.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=self.M,
            expansion_add=self.ef_construction,
        )
        self.index.add(np.arange(len(keys)), keys, threads=self.num_threads)

    def search(self, queries, k, param):
        self.index.expansion_search = max(param, k)  # type: ignore[misc]  # the stub lacks the setter
        matches = self.index.search(queries, k, threads=self.num_threads)
        return matches.keys.astype(np.int64), matches.computed_distances / len(queries)


class VoyagerIP(_GraphLibrary):
    """voyager's HNSW (``pip install voyager``) in ``Space.InnerProduct``, same M and
    ef_construction (reports no distance counts)."""

    label = "voyager ip"

    def build(self, keys):
        import voyager

        self.distance_dim = keys.shape[1]
        self.index = voyager.Index(
            voyager.Space.InnerProduct,
            num_dimensions=keys.shape[1],
            M=self.M,
            ef_construction=self.ef_construction,
        )
        # Its inner product adds a coordinate from the largest norm seen so far: keys must come
        # in descending norm, or later larger ones are misranked.
        order = insertion_order(keys)
        self.index.add_items(keys[order], order, num_threads=self.num_threads)

    def search(self, queries, k, param):
        ids, _ = self.index.query(
            queries, k=k, num_threads=self.num_threads, query_ef=max(param, k)
        )
        return ids.astype(np.int64), math.nan
