"""Property tests of the C++ boundary against a numpy reference.

Keys and queries hold small integers, so every inner product is exact in float32 whatever order
the kernels sum in: scores, ids and the tie rule (lower id first) are compared exactly. Arguments
outside the contract (sizes near overflow, wrong shapes or dtypes, out-of-range ids) must raise a
Python exception; a crash would end the test run.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import amips_plugins as ap
from amips_plugins import _core
from conftest import reference_topk, reference_topk_of_scores

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REFUSED = (ValueError, TypeError, OverflowError)
THREADS = st.integers(1, 3)


@st.composite
def queries_and_keys(draw, max_n=300, max_d=160, min_nq=0):
    """Shapes drawn by hypothesis, values (integers in [-3, 3], so that every dot product is exact
    in float32) by numpy from a drawn seed: large arrays stay cheap to generate."""
    d = draw(st.integers(1, max_d))
    n = draw(st.integers(1, max_n))
    nq = draw(st.integers(min_nq, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (
        rng.integers(-3, 4, size=(nq, d)).astype(np.float32),
        rng.integers(-3, 4, size=(n, d)).astype(np.float32),
    )


@PROPERTY
@given(data=queries_and_keys(), k_fraction=st.floats(0, 1), threads=THREADS)
def test_topk_dot_is_numpys_stable_top_k(data, k_fraction, threads):
    q, x = data
    k = 1 + int(k_fraction * (len(x) - 1))
    D, I = _core.topk_dot(q, x, k, threads)
    want_D, want_I = reference_topk(q, x, k)
    np.testing.assert_array_equal(D, want_D)
    np.testing.assert_array_equal(I, want_I)


@PROPERTY
@given(data=queries_and_keys(), split=st.floats(0, 1), k_fraction=st.floats(0, 1))
def test_packed_keys_and_tail_search_as_one_matrix(data, split, k_fraction):
    q, x = data
    n_packed = int(split * len(x)) // 64 * 64
    panels = np.empty(n_packed * x.shape[1], np.float32)
    _core.pack_keys(panels, 0, x[:n_packed])
    np.testing.assert_array_equal(_core.unpack_keys(panels, n_packed, x.shape[1]), x[:n_packed])
    k = 1 + int(k_fraction * (len(x) - 1))
    D, I = _core.topk_dot_packed(q, panels, n_packed, x[n_packed:], k, 2)
    want_D, want_I = reference_topk(q, x, k)
    np.testing.assert_array_equal(D, want_D)
    np.testing.assert_array_equal(I, want_I)


@st.composite
def segmented(draw):
    q, x = draw(queries_and_keys(max_n=300, max_d=80))
    cuts = draw(st.lists(st.integers(0, len(x)), min_size=0, max_size=8))
    offsets = np.array([0, *sorted(cuts), len(x)], dtype=np.int64)
    return q, x, offsets


@PROPERTY
@given(data=segmented(), threads=st.integers(1, 5), split=st.none() | st.floats(0, 1))
def test_segment_max_dot_is_numpys_per_segment_argmax(data, threads, split):
    """Row-major keys, or (``split``) packed keys and a tail; few queries split the keys over the
    threads at panel boundaries, where segments straddle them."""
    q, x, offsets = data
    if split is None:
        D, I = _core.segment_max_dot(q, x, offsets, threads)
    else:
        n_packed = int(split * len(x)) // 64 * 64
        panels = np.empty(n_packed * x.shape[1], np.float32)
        _core.pack_keys(panels, 0, x[:n_packed])
        D, I = _core.segment_max_dot_packed(q, panels, n_packed, x[n_packed:], offsets, threads)
    scores = q.astype(np.float64) @ x.T.astype(np.float64)
    for c, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:])):
        if lo == hi:
            assert np.all(D[:, c] == -np.inf) and np.all(I[:, c] == -1)
            continue
        best = lo + np.argmax(scores[:, lo:hi], axis=1)  # argmax: the first of equal maxima
        np.testing.assert_array_equal(I[:, c], best)
        np.testing.assert_array_equal(D[:, c], scores[np.arange(len(q)), best].astype(np.float32))


@pytest.mark.parametrize("threads", [2, 3, 4])
@pytest.mark.parametrize("packed", [False, True])
def test_segment_max_dot_splits_a_few_queries_over_threads_exactly(threads, packed):
    """Enough work for several threads on 3 queries: the keys are split at panel boundaries, which
    long segments and ties (small integers) straddle."""
    rng = np.random.default_rng(threads)
    q = rng.integers(-3, 4, size=(3, 64)).astype(np.float32)
    x = rng.integers(-1, 2, size=(20_000, 64)).astype(np.float32)
    offsets = np.array([0, 5, 6_000, 6_001, 13_333, 13_400, 19_990, 20_000], dtype=np.int64)
    if packed:
        panels = np.empty(19_968 * 64, np.float32)
        _core.pack_keys(panels, 0, x[:19_968])
        D, I = _core.segment_max_dot_packed(q, panels, 19_968, x[19_968:], offsets, threads)
    else:
        D, I = _core.segment_max_dot(q, x, offsets, threads)
    scores = q.astype(np.float64) @ x.T.astype(np.float64)
    for c, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:])):
        best = lo + np.argmax(scores[:, lo:hi], axis=1)
        np.testing.assert_array_equal(I[:, c], best)
        np.testing.assert_array_equal(D[:, c], scores[np.arange(3), best].astype(np.float32))


@PROPERTY
@given(
    rankings=st.tuples(st.integers(0, 6), st.integers(0, 9), st.integers(0, 9)).flatmap(
        lambda s: st.tuples(
            hnp.arrays(np.int64, (s[0], s[1]), elements=st.integers(-1, 12)),
            hnp.arrays(np.int64, (s[0], s[2]), elements=st.integers(-1, 12)),
        )
    ),
    count=st.integers(0, 12),
)
def test_take_in_turn_is_the_first_distinct_lists_of_both_in_turn(rankings, count):
    a, b = rankings
    got = _core.take_in_turn(a, b, count)
    assert got.shape == (len(a), count)
    for row, ra, rb in zip(got, a, b):
        want = []
        for j in range(max(len(ra), len(rb))):
            for c in (ra[j] if j < len(ra) else -1, rb[j] if j < len(rb) else -1):
                if c >= 0 and c not in want and len(want) < count:
                    want.append(int(c))
        np.testing.assert_array_equal(row, want + [-1] * (count - len(want)))


@PROPERTY
@given(
    elements=hnp.arrays(
        np.int64, st.tuples(st.integers(0, 4), st.integers(0, 9)), elements=st.integers(-1, 7)
    ),
    labels=hnp.arrays(np.int64, 8, elements=st.integers(0, 5)),
    count=st.integers(0, 8),
)
def test_take_in_turn_with_labels_takes_the_labels_of_the_entries(elements, labels, count):
    """A graph router's elements stand for their lists: mapped in the call as numpy would."""
    mapped = np.where(elements >= 0, labels[np.maximum(elements, 0)], -1)
    none = np.empty((len(elements), 0), np.int64)
    got = _core.take_in_turn(elements, none, count, a_labels=labels)
    np.testing.assert_array_equal(got, _core.take_in_turn(mapped, none, count))


def test_take_in_turn_refuses_entries_beyond_the_labels():
    with pytest.raises(ValueError, match="beyond the 3 labels"):
        _core.take_in_turn(np.array([[0, 3]]), np.empty((1, 0), np.int64), 2, a_labels=np.arange(3))


@PROPERTY
@given(data=segmented(), bad=st.sampled_from(["decreasing", "short", "past_end", "negative"]))
def test_segment_max_dot_refuses_offsets_outside_the_keys(data, bad):
    q, x, offsets = data
    offsets = offsets.copy()
    if bad == "decreasing":
        offsets = np.array([0, len(x), 0, len(x)], dtype=np.int64) if len(x) else offsets[:0]
    elif bad == "short":
        offsets = offsets[:1]
    elif bad == "past_end":
        offsets[-1] = len(x) + 1
    else:
        offsets[0] = -1
    with pytest.raises(REFUSED):
        _core.segment_max_dot(q, x, offsets, 1)


@PROPERTY
@given(
    data=queries_and_keys(max_n=100, max_d=64, min_nq=1),
    m=st.integers(0, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_rescore_is_numpys_gather(data, m, seed):
    q, x = data
    ids = np.random.default_rng(seed).integers(-1, len(x), size=(len(q), m))
    got = _core.rescore(q, x, ids, 2)
    full = (q.astype(np.float64) @ x.T.astype(np.float64)).astype(np.float32)
    want = np.where(ids >= 0, np.take_along_axis(full, np.maximum(ids, 0), axis=1), -np.inf)
    np.testing.assert_array_equal(got, want)


@PROPERTY
@given(
    data=queries_and_keys(max_n=50, max_d=16, min_nq=1),
    bad_id=st.one_of(st.integers(-(2**63), -2), st.integers(50, 2**63 - 1)),
)
def test_rescore_refuses_ids_outside_the_keys(data, bad_id):
    q, x = data
    if 0 <= bad_id < len(x):
        bad_id = len(x)
    ids = np.zeros((len(q), 2), np.int64)
    ids[-1, -1] = bad_id
    with pytest.raises(REFUSED):
        _core.rescore(q, x, ids, 1)


@PROPERTY
@given(
    scores=hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 6), st.integers(1, 40)),
        elements=st.sampled_from([-np.inf, np.nan, -2.0, -1.0, 0.0, 1.0, 2.0, 7.5]),
    ),
    extra=st.integers(-40, 4),
    threads=THREADS,
)
def test_topk_rows_is_numpys_stable_top_k(scores, extra, threads):
    k = max(1, scores.shape[1] + extra)
    if k > scores.shape[1]:
        with pytest.raises(ValueError, match="must lie in"):
            _core.topk_rows(scores, k, threads)
        return
    D, I = _core.topk_rows(scores, k, threads)
    want_D, want_I = reference_topk_of_scores(scores, k)
    np.testing.assert_array_equal(D, want_D)
    np.testing.assert_array_equal(I, want_I)


@PROPERTY
@given(
    scores=hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 6), st.integers(1, 40)),
        elements=st.sampled_from([-np.inf, np.nan, -2.0, 0.0, 1.0, 7.5]),
    ),
    data=st.data(),
    threads=THREADS,
)
def test_topk_rows_with_labels_takes_the_labelled_entries_and_pads_as_faiss(scores, data, threads):
    labels = data.draw(hnp.arrays(np.int64, scores.shape, elements=st.integers(-1, 50)))
    k = data.draw(st.integers(1, scores.shape[1]))
    D, I = _core.topk_rows(scores, k, threads, labels=labels)
    ranked = np.where(np.isnan(scores), -np.inf, scores)
    for row in range(len(scores)):
        kept = [c for c in np.argsort(-ranked[row], kind="stable") if labels[row, c] >= 0][:k]
        want_D = np.full(k, np.finfo(np.float32).min, np.float32)
        want_I = np.full(k, -1, np.int64)
        want_D[: len(kept)] = ranked[row, kept]
        want_I[: len(kept)] = labels[row, kept]
        np.testing.assert_array_equal(D[row], want_D)
        np.testing.assert_array_equal(I[row], want_I)
    with pytest.raises(ValueError, match="shape of scores"):
        _core.topk_rows(scores, k, threads, labels=labels[:, :-1])


@PROPERTY
@given(
    group_sizes=st.lists(st.integers(1, 9), min_size=1, max_size=5),
    n=st.integers(1, 80),
    d=st.sampled_from([1, 3, 16, 50]),
    seed=st.integers(0, 2**16),
    threads=THREADS,
)
def test_take_better_answers_is_the_best_listed_key_that_beats_each_query(
    group_sizes, n, d, seed, threads
):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int64)
    queries = rng.standard_normal((offsets[-1], d)).astype(np.float32)
    keys = (rng.standard_normal((n, d)) * rng.uniform(0.1, 3, (n, 1))).astype(np.float32)
    scores = rng.choice([-np.inf, 0.0, 1.0, 3.0], len(queries)).astype(np.float32)
    given_scores = scores.copy()
    answers = rng.integers(-1, 5, len(queries))
    ids = rng.permutation(1000)[:n].astype(np.int64) + 10
    norms = np.linalg.norm(keys, axis=1)
    # each group's keys: a random subset, by descending norm
    listed = [np.array(sorted(rng.choice(n, rng.integers(0, n + 1), replace=False),
                              key=lambda r: -norms[r]), np.int64) for _ in group_sizes]  # fmt: skip
    key_offsets = np.concatenate([[0], np.cumsum([len(rows) for rows in listed])])
    new_scores, new_answers, changed = _core.take_better_answers(
        queries,
        np.linalg.norm(queries, axis=1),
        offsets,
        scores,
        answers,
        keys,
        norms,
        ids,
        key_offsets,
        np.concatenate(listed),
        threads,
    )
    exact = queries.astype(np.float64) @ keys.T.astype(np.float64)
    for g, rows in enumerate(listed):
        for q in range(offsets[g], offsets[g + 1]):
            best = max(exact[q, rows], default=-np.inf)
            if best > scores[q] + 1e-4:  # clearly beaten: by the best listed key
                assert changed[q] == 1
                assert new_scores[q] == pytest.approx(best, abs=1e-4)
                assert new_answers[q] == ids[rows[np.argmax(exact[q, rows])]]
            elif best < scores[q] - 1e-4:  # clearly not: unchanged
                assert changed[q] == 0
                assert new_scores[q] == scores[q] and new_answers[q] == answers[q]
    np.testing.assert_array_equal(scores, given_scores)  # the inputs are left as they were
    # float16 queries (the ledger's) give what their float32 values give, bit for bit
    scale = 10.0 ** rng.integers(-7, 4, queries.shape)  # subnormal to large halves
    half = (queries * scale).astype(np.float16)
    half_norms = np.linalg.norm(half.astype(np.float32), axis=1)
    args = (offsets, scores, answers, keys, norms, ids, key_offsets, np.concatenate(listed))
    for a, b in zip(
        _core.take_better_answers(half, half_norms, *args, threads),
        _core.take_better_answers(half.astype(np.float32), half_norms, *args, threads),
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="float32 or float16"):
        _core.take_better_answers(
            queries.astype(np.float64), np.linalg.norm(queries, axis=1), *args, threads
        )
    outside = np.concatenate([[0], np.ones(len(group_sizes), np.int64)])  # group 0 lists row n
    with pytest.raises(ValueError, match="key_rows must lie"):
        _core.take_better_answers(
            queries, np.linalg.norm(queries, axis=1), offsets, scores, answers, keys, norms, ids,
            outside, np.array([n]), threads)  # fmt: skip


NEAR_OVERFLOW = st.one_of(
    st.integers(-(2**63), -1),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**40, 2**60, 2**62 - 1, 2**63 - 1]),
    st.integers(2**40, 2**63 - 1),
)


@PROPERTY
@given(size=NEAR_OVERFLOW)
def test_sizes_near_overflow_are_refused_not_followed(size):
    q = np.ones((1, 16), np.float32)
    keys = np.ones((64, 16), np.float32)
    panels = np.zeros(1024, np.float32)
    calls = [
        lambda: _core.topk_dot(q, keys, size, 1),
        lambda: _core.topk_dot(q, keys, 1, size),
        lambda: _core.topk_dot_packed(q, panels, size, keys[:0], 1, 1),
        lambda: _core.topk_dot_packed(q, panels, 64, keys[:1], size, 1),
        lambda: _core.segment_max_dot(q, keys, np.array([0, 64]), size),
        lambda: _core.rescore(q, keys, np.zeros((1, 1), np.int64), size),
        lambda: _core.pack_keys(panels, size, keys),
        lambda: _core.unpack_keys(panels, size, 16),
        lambda: _core.unpack_keys(panels, 64, size),
        lambda: _core.topk_rows(np.ones((2, 3), np.float32), size, 1),
    ]
    for call in calls:
        with pytest.raises(REFUSED):
            call()


@PROPERTY
@given(
    array=hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8, np.float16]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        elements=st.integers(0, 3),
    ),
    k=st.integers(-2, 8),
)
def test_exact_index_answers_or_refuses_any_array(array, k):
    """Any shape and real dtype as keys and queries: numpy's answer (padded beyond the keys) or a
    one-line refusal."""
    try:
        index = ap.ExactIndex(array.shape[-1] if array.ndim else 1)
        index.add(array)
        D, I = index.search(array, k)
    except REFUSED as e:
        assert "\n" not in str(e)
        return
    want_D, want_I = reference_topk(array, array, k)
    np.testing.assert_array_equal(D, want_D)
    np.testing.assert_array_equal(I, want_I)


@PROPERTY
@given(
    batches=st.lists(
        hnp.arrays(
            np.float32,
            st.tuples(st.integers(0, 4), st.just(6)),
            elements=st.floats(-(2.0**60), 2.0**60, width=32),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_xbox_max_norm_is_the_running_maximum(batches):
    xbox = ap.XboxTransform(6)
    running = 0.0
    for keys in batches:
        out = xbox.add_keys(keys)
        norms = np.linalg.norm(keys.astype(np.float64), axis=1)
        running = max([running, *norms])
        assert xbox.max_norm == pytest.approx(running, rel=1e-6)
        assert out.shape == (len(keys), 7) and np.all(np.isfinite(out))
        np.testing.assert_array_equal(out[:, :6], keys)
        # the extra coordinate is a float32: among subnormals its step (1.4e-45) is the error
        np.testing.assert_allclose(
            np.linalg.norm(out.astype(np.float64), axis=1),
            xbox.max_norm,
            rtol=1e-5,
            atol=2 * float(np.finfo(np.float32).smallest_subnormal),
        )
    assert xbox.count == sum(len(b) for b in batches)
