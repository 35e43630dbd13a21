import pickle

import numpy as np
import pytest

import amips_plugins as ap


def varied_norm_keys(rng, n, d):
    return (rng.standard_normal((n, d)) * rng.lognormal(0, 0.7, (n, 1))).astype(np.float32)


def test_augmented_batch_has_norm_m():
    rng = np.random.default_rng(0)
    keys = varied_norm_keys(rng, 500, 13)
    t = ap.XboxTransform(13)
    aug = t.add_keys(keys)
    assert aug.shape == (500, 14) and aug.dtype == np.float32
    np.testing.assert_array_equal(aug[:, :13], keys)
    m = np.linalg.norm(keys.astype(np.float64), axis=1).max()
    assert t.max_norm == pytest.approx(m, rel=1e-12)
    np.testing.assert_allclose(np.linalg.norm(aug.astype(np.float64), axis=1), m, rtol=1e-6)
    assert t.count == 500


def test_l2_nearest_neighbour_is_mips_top1():
    rng = np.random.default_rng(1)
    keys = varied_norm_keys(rng, 2000, 9)
    queries = rng.standard_normal((100, 9)).astype(np.float32)
    t = ap.XboxTransform(9)
    aug_keys, aug_queries = t.add_keys(keys), t.transform_queries(queries)
    np.testing.assert_array_equal(aug_queries[:, 9], 0)
    dist = ((aug_queries[:, None, :].astype(np.float64) - aug_keys[None]) ** 2).sum(-1)
    _, mips = ap.topk_dot(queries, keys, 1)
    np.testing.assert_array_equal(dist.argmin(axis=1), mips[:, 0])


def test_max_norm_grows_and_ignores_batch_order():
    rng = np.random.default_rng(2)
    keys = varied_norm_keys(rng, 1000, 7)
    forward, backward = ap.XboxTransform(7), ap.XboxTransform(7)
    norms = []
    for chunk in np.array_split(keys, 5):
        forward.add_keys(chunk)
        norms.append(forward.max_norm)
    for chunk in np.array_split(keys, 5)[::-1]:
        backward.add_keys(chunk)
    assert norms == sorted(norms)
    assert forward.max_norm == backward.max_norm
    assert forward.count == backward.count == 1000


def test_state_round_trip_and_pickle():
    rng = np.random.default_rng(3)
    t = ap.XboxTransform(5)
    t.add_keys(varied_norm_keys(rng, 50, 5))
    more = varied_norm_keys(rng, 20, 5) * 0.1
    restored = ap.XboxTransform.from_state_dict(t.state_dict())
    unpickled = pickle.loads(pickle.dumps(t))
    expected = t.add_keys(more)
    np.testing.assert_array_equal(restored.add_keys(more), expected)
    np.testing.assert_array_equal(unpickled.add_keys(more), expected)
    assert restored.count == unpickled.count == 70


@pytest.mark.parametrize(
    "state",
    [
        {"format": "something else"},
        {
            "format": "amips_plugins.XboxTransform",
            "version": 99,
            "dim": 5,
            "max_norm": 1.0,
            "count": 1,
        },
        {
            "format": "amips_plugins.XboxTransform",
            "version": 1,
            "dim": 6,
            "max_norm": 1.0,
            "count": 1,
        },
        {
            "format": "amips_plugins.XboxTransform",
            "version": 1,
            "dim": 5,
            "max_norm": -1.0,
            "count": 1,
        },
        {"format": "amips_plugins.XboxTransform", "version": 1, "dim": 5, "max_norm": 1.0},
        {
            "format": "amips_plugins.XboxTransform",
            "version": 1,
            "dim": 5,
            "max_norm": "x",
            "count": 1,
        },
    ],
)
def test_bad_state_is_refused(state):
    t = ap.XboxTransform(5)
    with pytest.raises(ValueError):
        t.load_state_dict(state)
    assert t.max_norm == 0.0 and t.count == 0


def test_wrong_dimension_is_refused():
    t = ap.XboxTransform(4)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        t.add_keys(np.ones((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        t.add_keys(np.full((2, 4), np.nan))
    assert t.count == 0  # nothing half-added


def test_a_batch_whose_norm_passes_float_range_is_refused_whole():
    t = ap.XboxTransform(4)
    t.add_keys(np.full((1, 4), 1e38, np.float32))
    state = t.state_dict()
    with pytest.raises(ValueError):
        t.add_keys(np.full((1, 4), 3e38, np.float32))  # norm 6e38 > FLT_MAX
    assert t.state_dict() == state
    assert np.isfinite(t.add_keys(np.ones((1, 4), np.float32))).all()
