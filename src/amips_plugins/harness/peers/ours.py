"""This package's own methods: exact search, the learned IVF and the HNSW wrapper."""

from __future__ import annotations

import math
import time

import numpy as np

from ...flat import ExactIndex
from ...hnsw import AmortizedHNSW
from ...ivf import AmortizedIVF, AmortizedIVFBase


class ExactSearch:
    """Exhaustive search on the C++ core (``ExactIndex``): the 100% reference."""

    name = "exact (amips_plugins)"
    param_name = None
    params = (None,)
    network_flops = 0

    def __init__(self, num_threads: int):
        self.num_threads = num_threads

    def build(self, keys):
        self.distance_dim = keys.shape[1]
        self.index = ExactIndex(self.distance_dim)
        self.index.add(keys)

    def search(self, queries, k, param):
        _, ids = self.index.search(queries, k, num_threads=self.num_threads)
        return ids, float(self.index.ntotal)


class LearnedIVF:
    """``AmortizedIVF`` (inner-product lists, or Xbox-L2 ones with ``xbox``) whose learned part is
    trained at build time by ``learn(index)``, e.g. ``lambda ivf: ivf.fit_router(train_queries)``,
    searched with ``probe_union`` (None: the index's own, AmortizedIVF's default or what
    ``fit_router`` chose). Its network's time is part of
    every search; its FLOPs are ``network_flops``."""

    param_name = "nprobe"

    def __init__(
        self,
        name: str,
        nlist: int,
        learn,
        *,
        xbox: bool = False,
        codes: str = "Flat",
        probe_union: bool | None = None,
        params=(1, 2, 4, 8, 16, 27, 64, 128),
    ):
        self.name, self.nlist, self.learn, self.xbox = name, nlist, learn, xbox
        self.codes = codes
        self.probe_union = probe_union
        self.twin_of: LearnedIVF | None = None
        self.params = tuple(p for p in params if p <= nlist)
        self.network_flops = 0
        self.fit_s = 0.0

    def union_twin(self) -> LearnedIVF:
        """The same trained index searched with ``probe_union`` (list it after this method)."""
        twin = LearnedIVF(
            f"{self.name} + faiss lists",
            self.nlist,
            None,
            xbox=self.xbox,
            codes=self.codes,
            probe_union=True,
            params=self.params,
        )
        twin.twin_of = self
        return twin

    index: AmortizedIVFBase
    distance_dim: int

    def build(self, keys):
        if self.twin_of is not None:
            self.index, self.distance_dim = self.twin_of.index, self.twin_of.distance_dim
            self.fit_s = self.twin_of.fit_s
            return
        if self.codes == "Flat":
            self.index = AmortizedIVF(None, keys.shape[1], self.nlist, xbox=self.xbox)
        else:
            self.index = AmortizedIVF.from_factory(keys.shape[1], f"IVF{self.nlist},{self.codes}")
        self.distance_dim = self.index.d
        self.index.train(keys)
        self.index.add(keys)
        start = time.perf_counter()
        self.learn(self.index)
        self.fit_s = time.perf_counter() - start

    def search(self, queries, k, param):
        self.index.nprobe = param
        if self.probe_union is not None:
            self.index.probe_union = self.probe_union
        _, ids = self.index.search(queries, k)
        stats = self.index.last_search_stats
        self.network_flops = stats["network_flops"]
        return ids, stats["distances"]


class OursHNSW:
    """``AmortizedHNSW`` with a ``construction`` space, its keys added in ``batches`` equal parts
    (streaming) or all at once, optionally searching with a trained ``query_transform`` named
    ``transform_name`` that gathers k candidates (reports no distance counts), or with edges
    learned from ``edge_queries`` (``fit_edges``, part of the build); ``fill_lists`` as
    ``AmortizedHNSW`` takes it (False: hnswlib's links)."""

    param_name = "ef"

    def __init__(
        self,
        num_threads: int,
        construction: str = "ip",
        batches: int = 1,
        M: int = 16,
        ef_construction: int = 200,
        seed: int = 100,
        params=(10, 20, 40, 100, 200, 400),
        query_transform=None,
        transform_name: str = "",
        edge_queries=None,
        fill_lists: bool = True,
    ):
        self.num_threads, self.construction, self.batches = num_threads, construction, batches
        self.fill_lists = fill_lists
        self.M, self.ef_construction, self.seed, self.params = (
            M,
            ef_construction,
            seed,
            tuple(params),
        )
        self.query_transform, self.edge_queries = query_transform, edge_queries
        streamed = f", {batches} batches" if batches > 1 else ""
        learned = f", {transform_name}" if query_transform is not None else ""
        learned += ", learned edges" if edge_queries is not None else ""
        learned += "" if fill_lists else ", hnswlib's links"
        self.name = f"AmortizedHNSW {construction} (M {M}{streamed}{learned})"
        self.network_flops = 0

    def build(self, keys):
        self.distance_dim = keys.shape[1]
        self.index = AmortizedHNSW(
            space="ip",
            dim=keys.shape[1],
            construction=self.construction,
            query_transform=self.query_transform,
            candidates=1,
            fill_lists=self.fill_lists,
        )
        if self.query_transform is not None:
            self.network_flops = 2 * self.query_transform.key_multiply_adds()
        self.index.init_index(
            len(keys), M=self.M, ef_construction=self.ef_construction, random_seed=self.seed
        )
        for part in np.array_split(np.arange(len(keys)), self.batches):
            self.index.add_items(keys[part], part, num_threads=self.num_threads)
        if self.edge_queries is not None:
            self.index.fit_edges(self.edge_queries, num_threads=self.num_threads)

    def search(self, queries, k, param):
        self.index.set_ef(max(param, k))
        labels, _ = self.index.knn_query(queries, k=k, num_threads=self.num_threads)
        return labels.astype(np.int64), math.nan


class OursHNSWTargetRecall(OursHNSW):
    """``AmortizedHNSW`` ('ip') calibrated at build time on ``calibration_queries`` for recall@k,
    then searched with ``target_recall`` = each param: a per-query ef on the C++ walk of its graph.
    The calibration's seconds are ``fit_s``."""

    param_name = "target_recall"

    def __init__(
        self, num_threads: int, calibration_queries, k: int, params=(0.8, 0.9, 0.95, 0.99)
    ):
        super().__init__(num_threads, params=params)
        self.calibration_queries, self.k = calibration_queries, k
        self.name = f"AmortizedHNSW ip, target_recall (M {self.M})"
        self.fit_s = 0.0

    def build(self, keys):
        super().build(keys)
        start = time.perf_counter()
        curve = self.index.calibrate(self.calibration_queries, self.k, num_threads=self.num_threads)
        self.fit_s = time.perf_counter() - start
        self.params = tuple(p for p in self.params if p <= max(curve.values()))  # reachable

    def search(self, queries, k, param):
        labels, _ = self.index.knn_query(
            queries, k=k, num_threads=self.num_threads, target_recall=param
        )
        return labels.astype(np.int64), self.index.last_search_stats["distances"]
