"""Yahoo Japan's NGT (``pip install ngt``, imported as ``ngtpy``): an ANNG graph."""

from __future__ import annotations

import tempfile

import numpy as np


class NGT:
    """NGT's ANNG graph with ``distance_type="Inner Product"`` (its own extra-coordinate
    transform), searched with ``epsilon = param``: the library's one knob, very sensitive
    (steps of 0.001 matter). Its distance counts are per call, reported per query."""

    param_name = "epsilon"
    network_flops = 0

    def __init__(self, num_threads: int, params=(0.0, 0.02, 0.05, 0.1, 0.2)):
        self.num_threads, self.params = num_threads, tuple(params)
        self.name = "NGT ANNG inner product"

    def build(self, keys):
        import ngtpy

        self.distance_dim = keys.shape[1]
        self._folder = tempfile.TemporaryDirectory()  # NGT keeps its index in files
        path = f"{self._folder.name}/index"
        ngtpy.create(path, keys.shape[1], distance_type="Inner Product")
        self.index = ngtpy.Index(path)
        self.index.batch_insert(np.ascontiguousarray(keys, np.float32), self.num_threads)

    def search(self, queries, k, param):
        import ngtpy

        self.index.set(epsilon=param)
        if len(queries) == 1:  # its own one-query call
            ids = self.index.search(queries[0], k, epsilon=param, with_distance=False)
            return np.asarray(ids, np.int64)[None], float("nan")
        results = ngtpy.BatchResults()
        self.index.batch_search(np.ascontiguousarray(queries, np.float32), results, k, False)
        return np.asarray(results.get_ids(), np.int64), float("nan")
