import os
import subprocess
import sys
import threading

import faiss
import numpy as np
import pytest

import amips_plugins as ap
from amips_plugins import _core
from conftest import assert_topk_matches, reference_topk


def test_simd_level_reports_cap(simd):
    assert ap.simd_level() == simd


@pytest.mark.parametrize("nq", [3, 9])  # one query tile (keys read once, in row order) or several
@pytest.mark.parametrize("d", range(1, 71))
def test_topk_matches_numpy_every_dim(simd, d, nq):
    rng = np.random.default_rng(d)
    keys = rng.standard_normal((301, d)).astype(np.float32)
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    scores, ids = ap.topk_dot(queries, keys, 7)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and scores.shape == (nq, 7)
    assert_topk_matches(scores, ids, *reference_topk(queries, keys, 7))


@pytest.mark.parametrize(
    "n, nq, k, d",
    [
        (1, 1, 1, 5),
        (20_000, 8, 10, 64),  # few queries: keys split across threads, then merged
        (4_000, 2_100, 3, 8),  # many queries: queries split across threads
        (999, 33, 100, 17),
    ],
)
def test_topk_shapes_and_thread_splits(simd, n, nq, k, d):
    rng = np.random.default_rng(n + nq)
    keys = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    scores, ids = ap.topk_dot(queries, keys, k, num_threads=2)
    assert_topk_matches(scores, ids, *reference_topk(queries, keys, k))
    one = ap.topk_dot(queries, keys, k, num_threads=1)
    np.testing.assert_array_equal(one[0], scores)  # bit for bit, whatever the thread count
    np.testing.assert_array_equal(one[1], ids)


def test_k_larger_than_n_is_refused_by_topk_dot_and_padded_by_exact_index(simd):
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="k = 5 exceeds the 3 keys"):
        ap.topk_dot(keys, keys, 5)
    with pytest.raises(ValueError, match="k = 5 exceeds the 3 keys"):
        ap.ground_truth(keys, keys, 5)
    index = ap.ExactIndex(4)  # faiss.IndexFlatIP's convention: rows padded with -1
    index.add(keys)
    scores, ids = index.search(keys, 5)
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert sorted(ids[0, :3]) == [0, 1, 2]
    with pytest.raises(ValueError, match="would take 11.2 GiB"):  # not ~12 GB of padding
        index.search(keys[:1], 10**9)


def test_ties_go_to_lower_id(simd):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((5, 19)).astype(np.float32)
    keys = np.concatenate([base, base, base])  # key i ties with i + 5 and i + 10, at every position
    queries = rng.standard_normal((6, 19)).astype(np.float32)
    scores, ids = ap.topk_dot(queries, keys, 15, num_threads=2)
    for row_scores, row_ids in zip(scores, ids):
        for a in range(14):
            if row_scores[a] == row_scores[a + 1]:
                assert row_ids[a] < row_ids[a + 1]
        assert np.all(np.diff(row_scores) <= 0)
    # Each group of three equal scores is an exact tie (same bits) listed as i, i + 5, i + 10.
    np.testing.assert_array_equal(ids[:, 1::3] - ids[:, 0::3], 5)


def test_scalar_avx2_avx512_agree(monkeypatch):
    from conftest import supported_levels

    rng = np.random.default_rng(2)
    keys = rng.standard_normal((5000, 45)).astype(np.float32)
    queries = rng.standard_normal((50, 45)).astype(np.float32)
    results = {}
    for level in supported_levels():
        monkeypatch.setenv("AMIPS_SIMD", level)
        results[level] = ap.topk_dot(queries, keys, 10)
    ref = reference_topk(queries, keys, 10)
    for scores, ids in results.values():
        assert_topk_matches(scores, ids, *ref)
    if "avx512" in results:
        # Both FMA paths run the same chain per pair, so they agree bit for bit.
        np.testing.assert_array_equal(results["avx2"][0], results["avx512"][0])
        np.testing.assert_array_equal(results["avx2"][1], results["avx512"][1])
    if len(results) < 2:
        pytest.skip("only one instruction set on this CPU")


def test_simd_cap_of_another_cpu_family_is_refused(monkeypatch):
    monkeypatch.setenv("AMIPS_SIMD", "avx2" if ap._core.detected_simd_level() == "neon" else "neon")
    with pytest.raises(ValueError, match="not a level of this CPU family"):
        ap.simd_level()
    monkeypatch.setenv("AMIPS_SIMD", "sse9")
    with pytest.raises(ValueError, match="must be scalar, neon, avx2 or avx512"):
        ap.topk_dot(np.ones((1, 2)), np.ones((3, 2)), 1)


def test_concurrent_calls_from_threads():
    rng = np.random.default_rng(3)
    keys = rng.standard_normal((20_000, 32)).astype(np.float32)
    batches = [rng.standard_normal((17, 32)).astype(np.float32) for _ in range(8)]
    expected = [ap.topk_dot(b, keys, 5) for b in batches]
    got = [None] * len(batches)

    def work(i):
        for _ in range(5):
            got[i] = ap.topk_dot(batches[i], keys, 5)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (es, ei), (gs, gi) in zip(expected, got):
        np.testing.assert_array_equal(es, gs)
        np.testing.assert_array_equal(ei, gi)


@pytest.mark.parametrize("nq", [2, 21])
def test_rescore_matches_topk_bit_for_bit(simd, nq):
    rng = np.random.default_rng(4)
    keys = rng.standard_normal((700, 37)).astype(np.float32)
    queries = rng.standard_normal((nq, 37)).astype(np.float32)
    scores, ids = ap.topk_dot(queries, keys, 9)
    np.testing.assert_array_equal(ap.rescore(queries, keys, ids), scores)


def lists_of(keys, sizes, ids):
    """keys (n, d) cut into lists of the given sizes, with their ids: the core's views."""
    bounds = np.cumsum([0, *sizes])
    rows = [keys[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return _core.ListViews(rows, [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])], keys.shape[1])


@pytest.mark.parametrize("nq", [1, 7, 1500])  # one query; a block of queries; blocks on threads
@pytest.mark.parametrize("d", [5, 50, 1100])  # below a panel chunk of 1,024 dimensions, and past it
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_scan_lists_finds_the_top_k_of_the_probed_lists(simd, nq, d, dtype):
    """Each query's top-k among the keys of its probed lists (-1: none, an empty list, lists
    of less than a panel and of several), scored as rescore scores (within rounding: lists
    that one or two queries of a block probe are scored row by row, in another order), padded
    as faiss pads."""
    rng = np.random.default_rng(nq + d)
    sizes = [0, 3, 130, 64, 1, 200]
    keys = rng.standard_normal((sum(sizes), d)).astype(dtype)
    ids = rng.permutation(10 * len(keys))[: len(keys)].astype(np.int64)
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    probes = np.stack([rng.permutation(len(sizes))[:3] for _ in range(nq)])
    probes[::3, 2] = -1
    if nq == 1:
        probes[0] = [1, 4, -1]  # 4 keys found for k = 10
    bounds = np.cumsum([0, *sizes])
    scores, found, scanned, reached = _core.scan_lists(
        queries, probes, lists_of(keys, sizes, ids), 10
    )
    assert scores.dtype == np.float32 and found.dtype == np.int64 and scores.shape == (nq, 10)
    assert scanned == sum(sizes[c] for c in probes.ravel() if c >= 0)
    np.testing.assert_array_equal(reached, np.full(nq, 3))
    for q in range(nq):
        rows = np.concatenate([np.arange(bounds[c], bounds[c + 1]) for c in probes[q] if c >= 0])
        exact = _core.rescore(queries[q : q + 1], keys, rows[None], 1)[0]
        order = np.lexsort((ids[rows], -exact))[:10]
        want_ids = np.full(10, -1)
        want_ids[: len(order)] = ids[rows[order]]
        want = np.full(10, -np.finfo(np.float32).max, np.float32)
        want[: len(order)] = exact[order]
        np.testing.assert_array_equal(found[q], want_ids)
        np.testing.assert_allclose(scores[q], want, rtol=1e-5, atol=1e-5 * np.sqrt(d))


def test_scan_lists_adds_each_lists_offset_to_its_scores():
    """Residual codes: the score of a key of a probed list is its row's plus that probe's
    offset, and the ranking is that of those sums."""
    rng = np.random.default_rng(3)
    keys = rng.standard_normal((300, 8)).astype(np.float32)
    views = lists_of(keys, [100, 200], np.arange(300))
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    probes = np.array([[0, 1]] * 5)
    offsets = np.array([[50.0, 0.0]] * 4 + [[0.0, 0.0]], np.float32)  # list 0 first for four
    scores, ids, _, _ = _core.scan_lists(queries, probes, views, 3, offsets)
    exact = queries @ keys.T + np.repeat(offsets, [100, 200], axis=1)
    np.testing.assert_array_equal(ids, np.argsort(-exact, axis=1)[:, :3])
    np.testing.assert_allclose(scores, np.sort(exact, axis=1)[:, ::-1][:, :3], rtol=1e-5)
    assert (ids[:4] < 100).all()


@pytest.mark.parametrize("nq", [3, 300])  # a block of three groups; blocks on threads
def test_scan_lists_deepening_scans_the_probes_each_query_reaches(nq):
    """A calibrated scan: every query's first probes, then as many as its kth best score found
    there over its norm gives it: the scan of exactly those probes, in one call."""
    rng = np.random.default_rng(nq)
    sizes = rng.integers(0, 90, 12)
    keys = rng.standard_normal((sizes.sum(), 16)).astype(np.float32)
    views = lists_of(keys, sizes, np.arange(len(keys)))
    queries = (rng.standard_normal((nq, 16)) * rng.uniform(0.5, 2, (nq, 1))).astype(np.float32)
    probes = np.stack([rng.permutation(12)[:8] for _ in range(nq)])
    probes[::5, 1] = -1
    first = _core.scan_lists(queries, probes[:, :2], views, 6)
    features = _core.score_over_norm(first[0][:, 3], queries)
    edges = np.quantile(features, [0.3, 0.6])  # three groups
    rule = _core.Deepening(2, 4, edges, np.array([7, 4, 2]))
    want = np.array([7, 4, 2])[np.searchsorted(edges, features, side="right")]
    np.testing.assert_array_equal(rule.nprobe_for(first[0][:, 3], queries), want)
    assert len(set(want)) == 3  # the test sees every group
    scores, ids, scanned, reached = _core.scan_lists(queries, probes, views, 6, deepening=rule)
    np.testing.assert_array_equal(reached, want)
    reaching = np.where(np.arange(8)[None, :] < want[:, None], probes, -1)
    wanted = _core.scan_lists(queries, reaching, views, 6)
    np.testing.assert_array_equal(ids, wanted[1])
    np.testing.assert_allclose(scores, wanted[0], rtol=1e-5, atol=1e-5)
    assert scanned == wanted[2]
    norms = np.sqrt((queries.astype(np.float64) ** 2).sum(axis=1))
    np.testing.assert_allclose(features, first[0][:, 3] / norms, rtol=1e-5)


def fast_scan_lists(m, nlist=3, n=700, by_residual=False, seed=0):
    """A faiss fast-scan IVF index of 4-bit codes (d = 2m), its lists as the core's views (read
    in place), its keys' decoded vectors by id, and queries."""
    rng = np.random.default_rng(seed)
    d = 2 * m
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFPQFastScan(quantizer, d, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
    index.by_residual = by_residual
    keys = rng.standard_normal((n, d)).astype(np.float32)
    index.train(keys)
    index.add(keys)
    invlists = faiss.downcast_InvertedLists(index.invlists)
    blocks, ids, decoded = [], [], np.empty((n, d), np.float32)
    for c in range(nlist):
        size = invlists.list_size(c)
        length = -(-size // 32) * invlists.block_size
        blocks.append(faiss.rev_swig_ptr(invlists.get_codes(c), length).copy())
        ids.append(faiss.rev_swig_ptr(invlists.get_ids(c), size).copy())
        for offset, key in enumerate(ids[-1]):
            index.reconstruct_from_offset(c, offset, faiss.swig_ptr(decoded[key]))
    pq = index.pq
    codebook = faiss.vector_to_array(pq.centroids).reshape(m, 16, 2)
    queries = rng.standard_normal((9, d)).astype(np.float32)
    return index, _core.ListViews.pq4(blocks, ids, codebook, d), decoded, codebook, queries


# odd m (a padding subquantizer); m = 300: byte sums that would pass 16 bits unscaled
@pytest.mark.parametrize("m", [1, 7, 8, 300])
def test_scan_lists_scores_fast_scan_codes_within_their_tables_rounding(simd, m):
    """4-bit codes in faiss's fast-scan blocks, read in place: every key's score is its decoded
    vector's within the rounding of the query's byte table (half a unit a subquantizer), the
    top-k are the best by those scores, and every instruction set gives the same bits."""
    _, views, decoded, codebook, queries = fast_scan_lists(m)
    probes = np.array([[0, 1, 2]] * len(queries))
    scores, ids, scanned, _ = _core.scan_lists(queries, probes, views, 700)
    assert scanned == 700 * len(queries) and (np.sort(ids, axis=1) == np.arange(700)).all()
    tables = np.einsum("nmt,mct->nmc", queries.reshape(len(queries), m, 2), codebook)
    spans = tables.max(axis=2) - tables.min(axis=2)
    unit = np.maximum(spans.max(axis=1) / 255, spans.sum(axis=1) / (65535 - (m + m % 2)))
    exact = (queries @ decoded.T)[np.arange(len(queries))[:, None], ids]
    error = np.abs(scores - exact)
    assert (error <= (0.5 * m + 1e-3) * unit[:, None] + 1e-4).all()
    assert error.max() > 0  # the scores are the table's, not exact ones
    assert (np.diff(scores, axis=1) <= 0).all()
    if simd != "scalar":
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AMIPS_SIMD", "scalar")
            scalar = _core.scan_lists(queries, probes, views, 700)
        np.testing.assert_array_equal(scalar[0], scores)
        np.testing.assert_array_equal(scalar[1], ids)


@pytest.mark.parametrize("by_residual", [False, True])
def test_scan_lists_of_fast_scan_codes_finds_what_faiss_finds(by_residual):
    """The core's scan of fast-scan lists against faiss's own (``search_preassigned``): the
    same keys, but where scores tie or sit within rounding of the k-th (faiss rounds the list's
    offset into its table too: residual codes differ a little more)."""
    index, views, decoded, _, queries = fast_scan_lists(8, nlist=4, n=2000, by_residual=by_residual)
    probes = np.array([[0, 2], [1, 3], [3, 0]] * 3, np.int64)
    centroids = index.quantizer.reconstruct_n(0, 4)
    offsets = (queries @ centroids.T)[np.arange(9)[:, None], probes].astype(np.float32)
    _, ids, _, _ = _core.scan_lists(queries, probes, views, 10, offsets if by_residual else None)
    index.nprobe = probes.shape[1]
    _, want = faiss.IndexIVF.search_preassigned(index, queries, 10, probes, offsets)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, want)])
    assert overlap >= 0.9


def test_scan_lists_refuses_what_it_cannot_scan():
    keys = np.ones((6, 4), np.float32)
    views = lists_of(keys, [2, 4], np.arange(6))
    queries = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"probes must lie in \[-1, 2\), found 2"):
        _core.scan_lists(queries, np.array([[0], [2]]), views, 3)
    with pytest.raises(ValueError, match="differ in dimension"):
        _core.scan_lists(np.ones((2, 5), np.float32), np.zeros((2, 1), np.int64), views, 3)
    with pytest.raises(ValueError, match="one row per query"):
        _core.scan_lists(queries, np.zeros((3, 1), np.int64), views, 3)
    with pytest.raises(ValueError, match="k must be positive"):
        _core.scan_lists(queries, np.zeros((2, 1), np.int64), views, 0)
    with pytest.raises(ValueError, match="list 1's rows must be C-contiguous float32"):
        _core.ListViews([keys[:2], keys[2:].astype(np.float64)], [np.arange(2), np.arange(4)], 4)
    with pytest.raises(ValueError, match="list 1's rows must be C-contiguous float16 .* list 0's"):
        _core.ListViews([keys[:2].astype(np.float16), keys[2:]], [np.arange(2), np.arange(4)], 4)
    with pytest.raises(ValueError, match="offsets .* must have the shape of probes"):
        _core.scan_lists(queries, np.zeros((2, 1), np.int64), views, 3, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="list 0's ids must be C-contiguous int64 \\(2,\\)"):
        _core.ListViews([keys[:2], keys[2:]], [np.arange(3), np.arange(4)], 4)
    rule = _core.Deepening(2, 3, np.array([0.5]), np.array([2, 3]))
    with pytest.raises(TypeError, match="deepening must be a Deepening or None"):
        _core.scan_lists(queries, np.zeros((2, 2), np.int64), views, 3, deepening=(2, 3))
    with pytest.raises(ValueError, match="kth 3 and first 2 must be at most k"):
        _core.scan_lists(queries, np.zeros((2, 2), np.int64), views, 2, deepening=rule)
    with pytest.raises(ValueError, match="kth 3 and first 2 must be at most k"):
        _core.scan_lists(queries, np.zeros((2, 1), np.int64), views, 3, deepening=rule)
    with pytest.raises(ValueError, match="edges must be finite and increasing"):
        _core.Deepening(2, 3, np.array([0.5, 0.5]), np.array([2, 3, 4]))
    with pytest.raises(ValueError, match="one entry per group"):
        _core.Deepening(2, 3, np.array([0.5]), np.array([2, 3, 4]))
    with pytest.raises(ValueError, match="nprobe must be positive"):
        _core.Deepening(2, 3, np.array([0.5]), np.array([0, 3]))


def test_rescore_of_halves_is_that_of_the_floats_they_stand_for(simd):
    """float16 keys (raw keys kept at half the memory) score as their float32 values, bit for
    bit: every finite half, zeros and subnormals among them; other key types are refused."""
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    halves = halves[np.isfinite(halves)]
    keys = halves[: len(halves) // 48 * 48].reshape(-1, 48)
    queries = np.random.default_rng(8).standard_normal((3, 48)).astype(np.float32)
    ids = np.tile(np.arange(-1, len(keys)), (3, 1))  # every row, and a missing candidate
    got = _core.rescore(queries, keys, ids, 2)
    np.testing.assert_array_equal(got, _core.rescore(queries, keys.astype(np.float32), ids, 2))
    assert np.isneginf(got[:, 0]).all() and np.isfinite(got[:, 1:]).all()
    with pytest.raises(ValueError, match="float32 or float16"):
        _core.rescore(queries, keys.astype(np.float64), ids, 2)


def test_rescore_pads_missing_candidates(simd):
    rng = np.random.default_rng(5)
    keys = rng.standard_normal((10, 6)).astype(np.float32)
    queries = rng.standard_normal((2, 6)).astype(np.float32)
    cand = np.array([[3, -1, 9], [-1, 0, 0]])
    got = ap.rescore(queries, keys, cand)
    expected = np.where(cand >= 0, np.einsum("qd,qmd->qm", queries, keys[cand]), -np.inf)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.isneginf(got[0, 1]) and np.isneginf(got[1, 0])


@pytest.mark.parametrize("nq", [3, 3000])  # few queries split the segments, many split the queries
def test_segment_max_dot_matches_numpy(simd, nq):
    rng = np.random.default_rng(nq)
    sizes = np.array([0, 50, 1, 0, 700, 2000, 3, 0])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    keys = rng.standard_normal((offsets[-1], 11)).astype(np.float32)
    keys[60:62] = keys[51]  # a tie inside segment 4 (starts at 51)
    queries = rng.standard_normal((nq, 11)).astype(np.float32)
    scores, ids = ap.segment_max_dot(queries, keys, offsets, num_threads=2)
    assert scores.shape == ids.shape == (nq, len(sizes))
    full = queries.astype(np.float64) @ keys.astype(np.float64).T
    for c, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        if a == b:
            assert np.isneginf(scores[:, c]).all() and (ids[:, c] == -1).all()
            continue
        np.testing.assert_allclose(scores[:, c], full[:, a:b].max(axis=1), rtol=1e-5, atol=1e-5)
        assert ((ids[:, c] >= a) & (ids[:, c] < b)).all()
    # Scores are those of the returned keys, and the tie in segment 4 goes to the lowest id.
    np.testing.assert_array_equal(ap.rescore(queries, keys, np.maximum(ids, 0))[:, 4], scores[:, 4])
    assert not np.isin(ids[:, 4], [60, 61]).any()


def test_forked_child_can_search():
    """The worker pool does not survive fork: a child must fall back to threads of its own."""
    import multiprocessing

    rng = np.random.default_rng(6)
    keys = rng.standard_normal((50_000, 32)).astype(np.float32)
    queries = rng.standard_normal((8, 32)).astype(np.float32)
    expected = ap.topk_dot(queries, keys, 3, num_threads=2)  # the parent's pool now exists
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(ap.topk_dot, (queries, keys, 3), {"num_threads": 2}).get(timeout=60)
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize(
    "env, affinity, expected",
    [
        ({"AMIPS_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"}, None, 3),
        ({"OMP_NUM_THREADS": "5,2"}, None, 5),
        ({"AMIPS_NUM_THREADS": "junk"}, {0}, 1),
        ({}, {0}, 1),
    ],
)
def test_default_threads_follow_environment_and_affinity(env, affinity, expected):
    import os
    import subprocess
    import sys

    code = "import os, sys\n"
    if affinity is not None:
        code += f"os.sched_setaffinity(0, {affinity!r})\n"
    code += "from amips_plugins import _core, _validation\n"
    code += "print(_core.default_num_threads(), _validation.as_num_threads(None))"
    clean = {
        k: v for k, v in os.environ.items() if k not in ("AMIPS_NUM_THREADS", "OMP_NUM_THREADS")
    }
    r = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(expected)] * 2


# --- sizes near overflow, ids and resources ----------------------------------------------------
def test_packed_buffer_sizes_are_checked_before_use():
    q = np.ones((1, 4), np.float32)
    tail = np.ones((1, 4), np.float32)
    with pytest.raises(ValueError):
        _core.topk_dot_packed(q, np.zeros(1024, np.float32), 2**60, tail, 1)
    with pytest.raises(ValueError):
        _core.pack_keys(np.zeros(1024, np.float32), 2**60 - 64, np.ones((64, 4), np.float32))
    with pytest.raises(ValueError):
        _core.unpack_keys(np.zeros(1024, np.float32), 2**62, 4)


def test_rescore_refuses_ids_beyond_int64():
    keys = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="int64"):
        ap.rescore(np.ones((1, 4), np.float32), keys, np.array([[2**64 - 1]], np.uint64))


def test_k_beyond_the_keys_is_refused_or_padded_within_a_bound():
    keys = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="exceeds"):
        ap.topk_dot(np.ones((1, 4), np.float32), keys, 3)
    index = ap.ExactIndex(4)
    index.add(keys)
    with pytest.raises(ValueError, match="GiB"):
        index.search(np.ones((1, 4), np.float32), 10**9)


_RUN_LIMITED = """
import resource, sys, numpy as np, amips_plugins as ap
{setup}
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _RUN_LIMITED.format(setup=code)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer's shadow memory does not fit an address-space limit",
)
def test_threads_that_cannot_start_do_not_abort_the_process():
    result = _run(
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "rng = np.random.default_rng(0)\n"
        "q = rng.standard_normal((1000, 64), dtype=np.float32)\n"
        "k = rng.standard_normal((50000, 64), dtype=np.float32)\n"
        "s, i = ap.segment_max_dot(q, k, np.arange(0, 50001, 10), num_threads=3000)\n"
        "print('ok', s.shape)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok (1000, 5000)" in result.stdout


def test_memory_of_a_search_does_not_grow_with_padding_to_a_panel():
    # Two keys at d = 2M: packing them into a whole panel of 64 would take 488 MB.
    result = _run(
        "x = np.ones((2, 2_000_000), np.float32)\n"
        "q = np.ones((1, 2_000_000), np.float32)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "ap.topk_dot(q, x, 1, num_threads=2)\n"
        "index = ap.ExactIndex(2_000_000)\n"
        "index.add(x[:1])\n"
        "index.search(q, 1)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) < 100  # MB
