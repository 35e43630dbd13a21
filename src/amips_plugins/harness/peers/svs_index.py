"""Intel's Scalable Vector Search (``pip install scalable-vs``): a Vamana graph."""

from __future__ import annotations

import math

import numpy as np


class SVSVamana:
    """SVS's Vamana graph with ``DistanceType.MIP`` on float32 keys, of ``graph_max_degree``
    (32: hnswlib's level-0 degree at M 16) and build window 200, searched with a window of
    ``param`` (at least k). Uncompressed: SVS's LVQ / LeanVec exit the process on CPUs that
    are not Intel's."""

    param_name = "window"
    network_flops = 0

    def __init__(self, num_threads: int, degree: int = 32, params=(10, 20, 40, 100, 200, 400)):
        self.num_threads, self.degree, self.params = num_threads, degree, tuple(params)
        self.name = f"SVS Vamana MIP (degree {degree})"

    def build(self, keys):
        import svs

        self.distance_dim = keys.shape[1]
        parameters = svs.VamanaBuildParameters(graph_max_degree=self.degree, window_size=200)
        self.index = svs.Vamana.build(
            parameters,
            np.ascontiguousarray(keys, np.float32),
            svs.DistanceType.MIP,
            num_threads=self.num_threads,
        )

    def search(self, queries, k, param):
        self.index.search_window_size = max(param, k)
        ids, _ = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return ids.astype(np.int64), math.nan
