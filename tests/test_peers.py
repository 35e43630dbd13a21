"""The peers the benchmarks measure return what their libraries find: ids of the right shape,
near the exact top-k at their largest setting (each skipped where its library is missing)."""

import numpy as np
import pytest

import amips_plugins as ap
from amips_plugins.harness import peers
from amips_plugins.harness.evaluation import recall_at_k

THREADS = 2


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((21_000, 16)) * rng.lognormal(0, 0.3, (21_000, 1))
    queries = rng.standard_normal((200, 16))
    keys, queries = keys.astype(np.float32), queries.astype(np.float32)
    return keys, queries, ap.topk_dot(queries, keys, 10)[1]


CASES = [
    ("faiss", lambda: peers.FaissIVFFastScanRefine(64, params=((64, 64),))),
    ("scann", lambda: peers.ScaNN(THREADS, params=((10**6, 1000),))),  # every leaf
    ("svs", lambda: peers.SVSVamana(THREADS, params=(400,))),
    ("ngtpy", lambda: peers.NGT(THREADS, params=(0.3,))),
]


@pytest.mark.parametrize("module, make", CASES, ids=[c[0] for c in CASES])
def test_a_peer_at_its_largest_setting_finds_the_exact_top_k(module, make, data):
    pytest.importorskip(module)
    keys, queries, truth = data
    method = make()
    method.build(keys)
    (param,) = method.params
    ids, _ = method.search(queries, 10, param)
    assert ids.shape == (len(queries), 10) and ids.dtype == np.int64
    assert recall_at_k(ids, truth) >= 0.95
    one, _ = method.search(queries[:1], 10, param)  # the library's one-query call
    np.testing.assert_array_equal(one[0], ids[0])
