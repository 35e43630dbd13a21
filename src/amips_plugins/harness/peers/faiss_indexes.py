"""faiss's own indexes: IVF (flat or compressed lists, inner product or Xbox-L2) and HNSW."""

from __future__ import annotations

import math

import faiss

from ...xbox import XboxTransform


class FaissIVF:
    """faiss's IVF index with an inner-product quantizer, or (``xbox=True``) L2 IVF on
    Xbox-augmented keys and queries; ``codes``: how the lists store keys, as in
    ``index_factory`` ("Flat", "PQ25x8", "SQ8", ...; Flat only with xbox)."""

    param_name = "nprobe"
    network_flops = 0

    def __init__(
        self,
        nlist: int,
        *,
        xbox: bool = False,
        codes: str = "Flat",
        params=(1, 2, 4, 8, 16, 27, 64, 128),
    ):
        self.nlist, self.xbox, self.codes = nlist, xbox, codes
        self.params = tuple(p for p in params if p <= nlist)
        kind = "Xbox-L2" if xbox else "IP"
        self.name = f"faiss IVF{'' if codes == 'Flat' else ',' + codes} {kind} (nlist {nlist})"

    def build(self, keys):
        d = keys.shape[1]
        self.distance_dim = d + 1 if self.xbox else d
        if self.xbox:
            self.transform = XboxTransform(d)
            keys = self.transform.add_keys(keys)
            self.index = faiss.IndexIVFFlat(
                faiss.IndexFlatL2(d + 1), d + 1, self.nlist, faiss.METRIC_L2
            )
        else:
            description = f"IVF{self.nlist},{self.codes}"
            self.index = faiss.index_factory(d, description, faiss.METRIC_INNER_PRODUCT)
        self.index.train(keys)
        self.index.add(keys)

    def search(self, queries, k, param):
        if self.xbox:
            queries = self.transform.transform_queries(queries)
        self.index.nprobe = param
        faiss.cvar.indexIVF_stats.reset()
        _, ids = self.index.search(queries, k)
        return ids, self.nlist + faiss.cvar.indexIVF_stats.ndis / len(queries)


class FaissHNSW:
    """``faiss.IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT``."""

    param_name = "ef"
    network_flops = 0

    def __init__(self, M: int = 16, ef_construction: int = 200, params=(10, 20, 40, 100, 200, 400)):
        self.M, self.ef_construction, self.params = M, ef_construction, tuple(params)
        self.name = f"faiss HNSW IP (M {M})"

    def build(self, keys):
        self.distance_dim = keys.shape[1]
        self.index = faiss.IndexHNSWFlat(keys.shape[1], self.M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.ef_construction
        self.index.add(keys)

    def search(self, queries, k, param):
        self.index.hnsw.efSearch = max(param, k)
        faiss.cvar.hnsw_stats.reset()
        _, ids = self.index.search(queries, k)
        return ids, faiss.cvar.hnsw_stats.ndis / len(queries)


class FaissIVFFastScanRefine:
    """faiss's IVF with 4-bit PQ fast-scan codes (d / 2 sub-quantizers) and an exact re-ranking
    of the best ``k_factor * k`` candidates from the raw keys: ``IVF{nlist},PQ{d/2}x4fs,RFlat``,
    inner product. ``param``: (nprobe, k_factor)."""

    param_name = "nprobe, k_factor"
    network_flops = 0

    def __init__(self, nlist: int, params=((8, 4), (16, 8), (32, 16), (64, 64))):
        self.nlist, self.params = nlist, tuple(params)
        self.name = f"faiss IVF-PQ fast-scan + refine (nlist {nlist})"

    def build(self, keys):
        d = keys.shape[1]
        self.distance_dim = d
        description = f"IVF{self.nlist},PQ{-(-d // 2)}x4fs,RFlat"
        self.index = faiss.index_factory(d, description, faiss.METRIC_INNER_PRODUCT)
        self.index.train(keys)
        self.index.add(keys)

    def search(self, queries, k, param):
        nprobe, k_factor = param
        params = faiss.IndexRefineSearchParameters(
            k_factor=k_factor, base_index_params=faiss.SearchParametersIVF(nprobe=nprobe)
        )
        _, ids = self.index.search(queries, k, params=params)
        return ids, math.nan  # fast-scan counts no distances
