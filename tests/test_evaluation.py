import math
import os

import numpy as np
import pytest

from amips_plugins.harness import peers
from amips_plugins.harness.evaluation import (
    format_table,
    match_rate,
    plot_curves,
    recall_at_k,
    settled_resident_mb,
    sweep,
)


def test_match_rate_by_hand():
    ids = np.array([[3, 1], [0, -1], [5, 2], [7, 7]])
    assert match_rate(ids, np.array([1, 0, 9, 7])) == 0.75
    with pytest.raises(ValueError, match="do not match"):
        match_rate(ids, np.array([1, 2]))


@pytest.mark.skipif(math.isnan(settled_resident_mb()), reason="no /proc/self/statm")
@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer's quarantine keeps freed memory resident until later frees evict it",
)
def test_settled_resident_memory_counts_live_arrays_only():
    before = settled_resident_mb()
    live = np.ones((64, 2**20), np.uint8)  # 64 MB, every page touched
    held = settled_resident_mb() - before
    del live
    left = settled_resident_mb() - before
    assert 60 < held < 70
    assert left < 4


def test_recall_by_hand():
    ids = np.array([[1, 2, 3], [4, 5, -1]])
    truth = np.array([[3, 2, 9], [5, 6, 7]])
    assert recall_at_k(ids, truth) == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match="same"):
        recall_at_k(ids, truth[:, :2])


def test_sweep_measures_every_method(tmp_path):
    rng = np.random.default_rng(0)
    keys = (rng.standard_normal((3000, 12)) * rng.lognormal(0, 0.5, (3000, 1))).astype(np.float32)
    queries = rng.standard_normal((100, 12)).astype(np.float32)
    from amips_plugins import topk_dot

    _, true_ids = topk_dot(queries, keys, 5)
    methods = [
        peers.ExactSearch(2),
        peers.FaissIVF(54, params=(1, 54)),
        peers.FaissIVF(54, xbox=True, params=(54,)),
        peers.FaissHNSW(params=(200,)),
        peers.HnswlibIP(2, params=(200,)),
    ]
    rows = sweep(methods, keys, queries, true_ids, k=5, progress=False)
    by = {(r["method"], r["param"]): r for r in rows}
    assert len(rows) == 6
    assert by[("exact (amips_plugins)", None)]["match_rate"] == 1.0
    # Probing every list is exhaustive: both IVF variants must then be exact.
    assert by[("faiss IVF IP (nlist 54)", 54)]["match_rate"] == 1.0
    xbox = by[("faiss IVF Xbox-L2 (nlist 54)", 54)]
    assert xbox["recall"] == 1.0
    assert xbox["flops_per_query"] == 2 * 13 * xbox["distances_per_query"]  # d + 1 coordinates
    assert (
        by[("faiss IVF IP (nlist 54)", 1)]["distances_per_query"]
        < by[("faiss IVF IP (nlist 54)", 54)]["distances_per_query"]
    )
    assert by[("faiss HNSW IP (M 16)", 200)]["recall"] > 0.9
    assert math.isnan(by[("hnswlib ip (M 16)", 200)]["distances_per_query"])
    assert "hnswlib ip" in format_table(rows)
    plot_curves(rows, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["UsearchIP", "VoyagerIP"])
def test_the_other_graph_libraries_search_by_inner_product(name):
    pytest.importorskip(name[:-2].lower())
    rng = np.random.default_rng(0)
    keys = (rng.standard_normal((2000, 12)) * rng.lognormal(0, 0.5, (2000, 1))).astype(np.float32)
    keys = keys[np.argsort(-np.linalg.norm(keys, axis=1))]  # voyager's transform needs it
    queries = rng.standard_normal((100, 12)).astype(np.float32)
    from amips_plugins import topk_dot

    _, true_ids = topk_dot(queries, keys, 5)
    method = getattr(peers, name)(2)
    method.build(keys)
    found, distances = method.search(queries, 5, 200)
    assert found.dtype == np.int64 and found.shape == (100, 5)
    assert recall_at_k(found, true_ids) > 0.9
    assert math.isnan(distances) if name == "VoyagerIP" else 0 < distances <= len(keys)


def test_declared_recall_peer_meets_its_targets_on_held_out_queries():
    pytest.importorskip("hnswlib")
    rng = np.random.default_rng(1)
    keys = (rng.standard_normal((4000, 32)) * rng.lognormal(0, 0.5, (4000, 1))).astype(np.float32)
    queries = rng.standard_normal((2500, 32)).astype(np.float32)
    calibration, test = queries[:2000], queries[2000:]
    from amips_plugins import topk_dot

    _, true_ids = topk_dot(test, keys, 10)
    method = peers.OursHNSWTargetRecall(2, calibration, 10, params=(0.9, 0.97, 1.5))
    method.build(keys)
    assert method.fit_s > 0 and method.params == (0.9, 0.97)  # 1.5 is out of reach
    for target in method.params:
        found, distances = method.search(test, 10, target)
        assert abs(recall_at_k(found, true_ids) - target) < 0.03 and distances > 0
