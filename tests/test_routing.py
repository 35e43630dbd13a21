import io

import numpy as np
import pytest

import amips_plugins as ap
from amips_plugins._hnsw_file import insertion_order
from amips_plugins.exact import topk_rows
from amips_plugins.routing import MaxAffineRouter, PieceGraphRouter


def grouped_keys(rng, n=600, d=8, lists=12):
    keys = (rng.standard_normal((n, d)) * rng.lognormal(0, 0.5, (n, 1))).astype(np.float32)
    offsets = np.linspace(0, n, lists + 1).astype(np.int64)
    return keys, offsets


def test_topk_rows_matches_a_stable_sort():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, (50, 37)).astype(np.float32)  # many ties
    scores[3, :5] = -np.inf
    scores[4, 7] = np.nan
    for k in (1, 5, 37):
        vals, cols = topk_rows(scores, k)
        ranked = np.where(np.isnan(scores), -np.inf, scores)
        ref = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(cols, ref)
        np.testing.assert_array_equal(vals, np.take_along_axis(ranked, ref, axis=1))


def test_topk_rows_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        topk_rows(np.zeros(5), 1)
    with pytest.raises(ValueError, match="positive"):
        topk_rows(np.zeros((2, 5)), 0)
    with pytest.raises(ValueError, match="k = 6 exceeds the 5 columns"):
        topk_rows(np.zeros((2, 5)), 6)


def test_router_scores_are_lower_bounds_of_the_list_support_values():
    rng = np.random.default_rng(1)
    keys, offsets = grouped_keys(rng)
    train = rng.standard_normal((2000, 8)).astype(np.float32)
    router = MaxAffineRouter.fit(keys, offsets, train, num_pieces=40)
    assert router.num_outputs == 12 and len(router.pieces) == 12 + 40
    test = rng.standard_normal((300, 8)).astype(np.float32)
    predicted = router.scores(test)
    exact, _ = ap.segment_max_dot(test, keys, offsets)
    assert (predicted <= exact + 1e-5).all()
    # the pieces are the keys that win most often: most test queries' best list ranks first
    true_list = np.argmax(exact, axis=1)
    assert (np.argmax(predicted, axis=1) == true_list).mean() > 0.6


def test_router_pieces_are_the_most_frequent_winners():
    rng = np.random.default_rng(2)
    keys, offsets = grouped_keys(rng, n=60, lists=3)
    train = rng.standard_normal((500, 8)).astype(np.float32)
    router = MaxAffineRouter.fit(keys, offsets, train, num_pieces=3)
    _, best = ap.topk_dot(train, keys, 1)
    top3 = np.argsort(-np.bincount(best[:, 0], minlength=60), kind="stable")[:3]
    pieces = {tuple(p) for p in router.pieces}
    assert all(tuple(keys[i]) in pieces for i in top3)


def test_router_state_round_trip_and_bad_offsets():
    rng = np.random.default_rng(3)
    keys, offsets = grouped_keys(rng)
    router = MaxAffineRouter.fit(keys, offsets, rng.standard_normal((100, 8)), num_pieces=5)
    again = MaxAffineRouter.from_state_dict(router.state_dict())
    q = rng.standard_normal((10, 8))
    np.testing.assert_array_equal(router.scores(q), again.scores(q))
    with pytest.raises(ValueError, match="offsets"):
        MaxAffineRouter(keys, np.array([0, 10]))
    with pytest.raises(ValueError, match="dimension"):
        router.scores(np.zeros((2, 7)))


def test_a_projected_router_scores_in_the_queries_principal_directions():
    rng = np.random.default_rng(4)
    keys, offsets = grouped_keys(rng)
    basis = np.linalg.qr(rng.standard_normal((8, 3)))[0]  # queries span 3 of the 8 dimensions
    train = (rng.standard_normal((2000, 3)) @ basis.T).astype(np.float32)
    test = (rng.standard_normal((300, 3)) @ basis.T).astype(np.float32)
    full = MaxAffineRouter.fit(keys, offsets, train, num_pieces=40)
    projected = MaxAffineRouter.fit(keys, offsets, train, num_pieces=40, dim=3)
    assert projected.dim == 8 and projected.pieces.shape == (len(full.pieces), 3)
    assert projected.multiply_adds() == projected.pieces.size + 8 * 3 < full.multiply_adds()
    # inside the queries' subspace nothing is lost: the same scores up to float rounding
    np.testing.assert_allclose(projected.scores(test), full.scores(test), rtol=1e-4, atol=1e-4)
    again = MaxAffineRouter.from_bytes(projected.to_bytes())
    np.testing.assert_array_equal(again.scores(test), projected.scores(test))
    assert MaxAffineRouter.fit(keys, offsets, train, num_pieces=40, dim=8).projection is None
    with pytest.raises(ValueError, match="does not map onto"):
        MaxAffineRouter(projected.pieces, projected.offsets, np.ones((8, 2)))


def test_a_graph_walk_over_every_piece_ranks_lists_as_the_exact_router_of_its_codes():
    rng = np.random.default_rng(5)
    keys, offsets = grouped_keys(rng)
    router = MaxAffineRouter.fit(keys, offsets, rng.standard_normal((2000, 8)), num_pieces=200)
    # a beam as wide as the pieces visits every one it can reach, all of them in this graph built
    # on one thread (on two, links depend on the threads' timing and a piece can lose its last
    # in-link): the exact ranking of the values the pieces' codes stand for
    walked = PieceGraphRouter.build(
        router.pieces, router.offsets, ef=len(router.pieces), num_threads=1
    )
    assert walked.num_pieces == len(router.pieces) and walked.dim == 8
    graph = walked._pieces.graph.arrays()
    assert "keys" not in graph  # codes only
    values = graph["code_low"] + graph["codes"] * graph["code_scale"]
    assert np.abs(values - router.pieces[insertion_order(router.pieces)]).max() <= (
        graph["code_scale"].max() / 2 + 1e-6
    )
    by_list = np.argsort(walked.element_lists, kind="stable")
    coded = MaxAffineRouter(
        values[by_list].astype(np.float32),
        np.searchsorted(walked.element_lists[by_list], range(13)),
    )
    test = rng.standard_normal((200, 8)).astype(np.float32)
    ranked, expected = walked.rank(test, 12, None, None), coded.rank(test, 12, None, None)
    # the same lists, in the same order up to float rounding between near-equal scores
    assert (ranked[:, 0] == expected[:, 0]).mean() > 0.99
    assert (ranked == expected).mean() > 0.99
    assert (np.sort(ranked, 1) == np.sort(expected, 1)).all()
    flops, coarse = walked.cost(None, 12)
    assert coarse == 0 and flops >= 2 * 8 * len(router.pieces)
    # a narrow beam finds fewer pieces: fewer distinct lists, padded with -1, at less cost
    narrow = walked.with_ef(2)
    lists = narrow.rank(test, 12, None, None)
    assert ((lists == -1).sum(1) >= 10).all() and narrow.cost(None, 12)[0] < flops


def test_graph_router_file_round_trip_and_bad_files():
    rng = np.random.default_rng(6)
    keys, offsets = grouped_keys(rng)
    router = PieceGraphRouter.build(keys, offsets, ef=16)
    again = PieceGraphRouter.from_bytes(router.to_bytes())
    test = rng.standard_normal((50, 8)).astype(np.float32)
    np.testing.assert_array_equal(again.rank(test, 4, None, None), router.rank(test, 4, None, None))
    assert repr(again) == repr(router) == "PieceGraphRouter(600 pieces over 12 lists, dim 8, ef 16)"
    with np.load(io.BytesIO(router.to_bytes())) as stored:
        state = dict(stored)
    for change, message in (
        ({"links0": None}, "without"),
        ({"entry": 600}, "entry point"),
        ({"element_lists": np.full(600, 12)}, "must lie in"),
        ({"element_lists": np.zeros(5, np.int64)}, "5 entries"),
    ):
        bad = {k: v for k, v in {**state, **change}.items() if v is not None}
        data = io.BytesIO()
        np.savez(data, **bad)
        with pytest.raises(ValueError, match=message):
            PieceGraphRouter.from_bytes(data.getvalue())
