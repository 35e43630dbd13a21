import numpy as np
import pytest

import amips_plugins as ap
from amips_plugins import _core

rng = np.random.default_rng(0)
KEYS = rng.standard_normal((50, 8)).astype(np.float32)
QUERIES = rng.standard_normal((4, 8)).astype(np.float32)


def test_float64_and_non_contiguous_are_converted():
    expected = ap.topk_dot(QUERIES, KEYS, 3)
    got = ap.topk_dot(QUERIES.astype(np.float64), np.asfortranarray(KEYS), 3)
    np.testing.assert_array_equal(got[1], expected[1])
    strided = np.zeros((4, 16), np.float32)
    strided[:, ::2] = QUERIES
    np.testing.assert_array_equal(ap.topk_dot(strided[:, ::2], KEYS, 3)[1], expected[1])


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    got = ap.topk_dot(torch.from_numpy(QUERIES), torch.from_numpy(KEYS), 3)
    np.testing.assert_array_equal(got[1], ap.topk_dot(QUERIES, KEYS, 3)[1])


def test_a_meta_tensor_is_refused_by_name():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"queries is a tensor on device 'meta'.*\(5, 8\)"):
        ap.topk_dot(torch.empty(5, 8, device="meta"), KEYS, 3)
    with pytest.raises(TypeError, match="keys is a tensor on device 'meta', which has no data"):
        ap.topk_dot(QUERIES, torch.empty(50, 8, device="meta"), 3)


@pytest.mark.parametrize(
    "queries, keys, k, error, match",
    [
        (QUERIES[0], KEYS, 3, ValueError, r"queries must be 2-D.*\(8,\)"),
        (QUERIES, KEYS[None], 3, ValueError, r"keys must be 2-D.*\(1, 50, 8\)"),
        (QUERIES[:, :5], KEYS, 3, ValueError, r"dimension 8.*\(4, 5\)"),
        (QUERIES, KEYS[:0], 3, ValueError, r"keys is empty.*\(0, 8\)"),
        (np.full((2, 8), np.nan), KEYS, 3, ValueError, "NaN or Inf"),
        (QUERIES, np.where(np.eye(50, 8) > 0, np.inf, KEYS), 3, ValueError, "keys contains NaN"),
        (
            QUERIES.astype(np.float64) * 1e300,
            KEYS,
            3,
            ValueError,
            "NaN or Inf",
        ),  # float64 beyond float32 range
        (QUERIES, KEYS, 0, ValueError, "k must be positive"),
        (QUERIES, KEYS, -2, ValueError, "k must be positive"),
        (QUERIES, KEYS, 2.5, TypeError, "k must be an integer"),
        (QUERIES, KEYS, True, TypeError, "k must be an integer"),
        (np.array([["a"] * 8]), KEYS, 3, TypeError, "real numbers"),
    ],
)
def test_bad_input_raises(queries, keys, k, error, match):
    with pytest.raises(error, match=match):
        ap.topk_dot(queries, keys, k)


def test_bad_candidates_and_offsets():
    with pytest.raises(ValueError, match=r"\[-1, 50\)"):
        ap.rescore(QUERIES, KEYS, np.full((4, 2), 50))
    with pytest.raises(ValueError, match="one row per query"):
        ap.rescore(QUERIES, KEYS, np.zeros((3, 2), np.int64))
    with pytest.raises(TypeError, match="integers"):
        ap.rescore(QUERIES, KEYS, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="end at the number of keys"):
        ap.segment_max_dot(QUERIES, KEYS, [0, 10, 40])
    with pytest.raises(ValueError, match="must not decrease"):
        ap.segment_max_dot(QUERIES, KEYS, [0, 30, 20, 50])


def test_exact_index_bad_input():
    index = ap.ExactIndex(8)
    with pytest.raises(ValueError, match=r"dimension 8.*\(4, 7\)"):
        index.add(np.ones((4, 7)))
    index.add(KEYS)
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, 8), np.nan))
    assert index.ntotal == 50  # nothing half-added
    with pytest.raises(ValueError, match="k must be positive"):
        index.search(QUERIES, 0)
    with pytest.raises(ValueError, match="positive"):
        ap.ExactIndex(0)


def test_core_checks_its_own_arguments():
    with pytest.raises(ValueError, match="2-D"):
        _core.topk_dot(QUERIES[0], KEYS, 3)
    with pytest.raises(ValueError, match="differ in dimension"):
        _core.topk_dot(QUERIES[:, :4], KEYS, 3)
    with pytest.raises(ValueError, match=r"k = 0 must lie in \[1, 50\]"):
        _core.topk_dot(QUERIES, KEYS, 0)


def test_unknown_simd_level_is_refused(monkeypatch):
    monkeypatch.setenv("AMIPS_SIMD", "sse9")
    with pytest.raises(ValueError, match="AMIPS_SIMD"):
        ap.topk_dot(QUERIES, KEYS, 3)
