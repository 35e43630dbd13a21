"""The walk's basis (``walk_dims``): codes of the keys' leading principal directions."""

import pickle

import numpy as np
import pytest

from amips_plugins import _core
from amips_plugins.exact import topk_dot
from amips_plugins.hnsw import AmortizedHNSW

D, R = 48, 16


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    # most of the keys' second moment in 12 directions, as in text embeddings' leading ones
    mixing = np.linalg.qr(rng.standard_normal((D, D)))[0]
    spread = np.r_[np.full(12, 3.0), np.full(D - 12, 0.3)]
    keys = ((rng.standard_normal((3000, D)) * spread) @ mixing.T).astype(np.float32)
    queries = ((rng.standard_normal((300, D)) * spread) @ mixing.T).astype(np.float32)
    return keys, queries, topk_dot(queries, keys, 10)[1]


def build(keys, **kw):
    index = AmortizedHNSW("ip", keys.shape[1], **kw)
    index.init_index(max_elements=len(keys), M=16, ef_construction=100, random_seed=1)
    index.add_items(keys, num_threads=1)
    index.set_ef(50)
    return index


def recall(index, queries, truth):
    found = index.knn_query(queries, k=10)[0].astype(np.int64)
    return np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])


def test_a_walk_along_the_leading_directions_finds_what_the_full_walk_finds(data):
    keys, queries, truth = data
    full, projected = build(keys, walk_dims=0), build(keys, walk_dims=R)
    assert full._graph.basis is None
    basis = projected._graph.basis
    assert basis.shape == (R, D) and projected._graph.code_ranges.shape == (2, R)
    np.testing.assert_allclose(basis @ basis.T, np.eye(R), atol=1e-5)  # unit, orthogonal
    assert projected._graph.memory_bytes < full._graph.memory_bytes
    ours, theirs = recall(projected, queries, truth), recall(full, queries, truth)
    assert ours > 0.9 and ours >= theirs - 0.03, (ours, theirs)
    # the returned scores stay exact: 1 - q . x of the labels returned
    labels, distances = projected.knn_query(queries[:20], k=5)
    exact = 1 - np.einsum("qd,qkd->qk", queries[:20], keys[labels.astype(np.int64)])
    np.testing.assert_allclose(distances, exact, rtol=1e-5, atol=1e-4)


def test_the_basis_is_kept_by_files_and_pickles_and_fitted_for_hnswlibs_graphs(data, tmp_path):
    keys, queries, truth = data
    index = build(keys, walk_dims=R)
    expected = index.knn_query(queries, k=10)
    index.save_index(tmp_path / "ours.amips")
    loaded = AmortizedHNSW("ip", D)  # walk_dims come from the file
    loaded.load_index(tmp_path / "ours.amips")
    copied = pickle.loads(pickle.dumps(index))
    for other in (loaded, copied):
        assert other.walk_dims == R
        np.testing.assert_array_equal(other._graph.basis, index._graph.basis)
        for a, b in zip(other.knn_query(queries, k=10), expected):
            np.testing.assert_array_equal(a, b)
    index.index.save_index(str(tmp_path / "plain.bin"))  # hnswlib's format: no basis in it
    plain = AmortizedHNSW("ip", D, walk_dims=R)
    plain.load_index(tmp_path / "plain.bin")
    assert plain._graph.basis.shape == (R, D) and recall(plain, queries, truth) > 0.9
    wrapped = AmortizedHNSW.wrap(index.index, walk_dims=R)
    assert wrapped._graph.basis.shape == (R, D) and recall(wrapped, queries, truth) > 0.9


def test_a_graph_grown_a_few_keys_at_a_time_gets_its_basis_once_it_has_enough(data, tmp_path):
    keys, queries, truth = data
    index = AmortizedHNSW("ip", D, walk_dims=20)  # not a whole number of vectors: 20 of 48
    index.init_index(max_elements=len(keys), M=16, ef_construction=100, random_seed=1)
    index.add_items(keys[:100], num_threads=1)
    assert index._graph.basis is None  # 100 keys: too few to fit one on (4 per dimension)
    index.add_items(keys[100:150], num_threads=1)
    assert index._graph.basis is None
    index.add_items(keys[150:], num_threads=1)
    assert index._graph.basis.shape == (20, D)
    index.set_ef(50)
    assert recall(index, queries, truth) > 0.9
    # a label added again is linked where its new key lies, its code along the basis
    index.add_items(-keys[7:8], [7], num_threads=1)
    labels = index.knn_query(-keys[7:8], k=1)[0]
    assert labels[0, 0] == 7
    # hnswlib's file of as few keys loads without one
    small = AmortizedHNSW("ip", D, walk_dims=R)
    small.init_index(max_elements=100, M=16)
    small.add_items(keys[:100])
    small.index.save_index(str(tmp_path / "small.bin"))
    loaded = AmortizedHNSW("ip", D, walk_dims=R)
    loaded.load_index(tmp_path / "small.bin")
    assert loaded._graph.basis is None
    for a, b in zip(loaded.knn_query(queries, k=5), small.knn_query(queries, k=5)):
        np.testing.assert_array_equal(a, b)


def test_an_xbox_graph_takes_a_basis_of_its_stored_keys(data):
    keys, queries, truth = data
    index = build(keys, construction="xbox", walk_dims=R)
    assert index._graph.basis.shape == (R, D + 1)
    assert recall(index, queries, truth) > 0.9


def test_walk_dims_default_to_half_of_a_large_dim_and_are_checked():
    assert AmortizedHNSW("ip", 384).walk_dims == 192
    assert AmortizedHNSW("ip", 300).walk_dims == 160  # half, rounded up to 16
    assert AmortizedHNSW("ip", 200).walk_dims == 0
    assert AmortizedHNSW("ip", 384, walk_dims=0).walk_dims == 0
    assert AmortizedHNSW("ip", 64, walk_dims=64).walk_dims == 0  # every dimension
    with pytest.raises(ValueError, match="walk_dims"):
        AmortizedHNSW("ip", 64, walk_dims=65)
    with pytest.raises(ValueError, match="walk_dims"):
        AmortizedHNSW("ip", 64, walk_dims=-1)
    with pytest.raises(TypeError, match="walk_dims"):
        AmortizedHNSW("ip", 64, walk_dims=8.0)


def test_the_core_refuses_a_basis_that_does_not_fit(data):
    keys = data[0]
    with pytest.raises(ValueError, match="basis"):
        _core.GraphSearch(D, 16, basis=np.ones((R, D + 1), np.float32))
    with pytest.raises(ValueError, match="basis"):
        _core.GraphSearch(D, 16, basis=np.ones((D + 1, D), np.float32))
    bad = np.eye(R, D, dtype=np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        _core.GraphSearch(D, 16, basis=bad)
    graph = _core.GraphSearch(D, 16, basis=np.eye(R, D, dtype=np.float32))
    graph.add(keys[:200], 50, 1, 1)
    arrays = graph.arrays()
    with pytest.raises(ValueError, match="basis"):
        _core.GraphSearch(**{**arrays, "basis": np.eye(R, D + 1, dtype=np.float32)})
    with pytest.raises(ValueError, match="codes only"):
        _core.GraphSearch(D, 16, keep_keys=False, basis=np.eye(R, D, dtype=np.float32))
    codes_only = _core.GraphSearch(D, 16, keep_keys=False)
    codes_only.add(keys[:200], 50, 1, 1)
    with pytest.raises(ValueError, match="codes only"):
        _core.GraphSearch(**codes_only.arrays(), basis=np.eye(R, D, dtype=np.float32))
    with pytest.raises(ValueError, match="code_low"):
        _core.GraphSearch(**{**arrays, "basis": np.eye(R + 1, D, dtype=np.float32)})
