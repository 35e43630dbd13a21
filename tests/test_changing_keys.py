"""Learned parts as keys come and go: routers that follow, calibrations measured again, and
stale parts named, never trusted silently."""

import warnings

import faiss
import numpy as np
import pytest

import amips_plugins as ap
from amips_plugins import StaleCalibrationError, StaleWarning
from amips_plugins.routing import MaxAffineRouter, PieceGraphRouter
from amips_plugins.routing.ledger import AnswerLedger
from conftest import clustered

D, NLIST, N = 16, 40, 12_000
BUDGET = 60_000  # FLOPs per query: a graph router at 4 probes on this data


@pytest.fixture(scope="module")
def data():
    """Clustered keys with varied norms; queries drawn like them (train, calibration, test)."""
    return clustered(D, (N, 8000, 2000, 2000), seed=0)


def half_built(data, **fit):
    """An index trained and fitted on the first half of the keys (ids = rows); by default the
    router ``fit_router`` chooses at a budget where a learned one wins."""
    keys, train, calibration, _ = data
    index = ap.AmortizedIVF(None, D, NLIST)
    index.train(keys[: N // 2])
    index.add(keys[: N // 2])
    index.fit_router(train, **(fit or {"budget": BUDGET}))
    index.calibrate(calibration, 10)
    return index


def found_top1(index, keys, present, queries):
    """Top-1 found, for queries whose best key is in the first half and in the second."""
    rows = np.flatnonzero(present)
    best = rows[ap.topk_dot(queries, keys[rows], 1)[1][:, 0]]
    found = index.search(queries, 1)[1][:, 0] == best
    new = best >= N // 2
    return found[~new].mean(), found[new].mean()


def exact_recall(ids, keys, present, queries, k=10):
    rows = np.flatnonzero(present)
    truth = rows[ap.topk_dot(queries, keys[rows], k)[1]]
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth)])


@pytest.mark.parametrize("fit", [{}, {"num_pieces": 4 * NLIST}], ids=["graph", "max-affine"])
def test_keys_added_after_fit_router_are_found_as_the_old_ones(data, fit):
    keys, _, _, test = data
    index = half_built(data, **fit)
    frozen = half_built(data, **fit)
    frozen._ledger = None  # the same router, not following the keys
    for part in np.array_split(np.arange(N // 2, N), 4):
        for ivf in (index, frozen):
            ivf.add(keys[part])
    present = np.ones(N, bool)
    old, new = found_top1(index, keys, present, test)
    with pytest.warns(StaleWarning):
        _, new_frozen = found_top1(frozen, keys, present, test)
    assert new >= old - 0.03, (old, new)
    assert new >= new_frozen + 0.3, (new, new_frozen)
    # every new key the ledger knows as an answer is a piece of its key's list
    ledger, router = index._ledger, index.router
    answers = np.unique(ledger.answers[ledger.answers >= N // 2])
    assert len(answers) > 20
    assert np.isin(answers, router.piece_ids).all()
    offsets, ids = index.list_ids()
    lists = np.repeat(np.arange(NLIST), np.diff(offsets))
    list_of = dict(zip(ids.tolist(), lists.tolist()))
    if isinstance(router, MaxAffineRouter):
        owners = np.repeat(np.arange(NLIST), np.diff(router.offsets))
        mapped = dict(zip(router.piece_ids.tolist(), owners.tolist()))
    else:
        mapped = dict(zip(router.piece_ids.tolist(), router.element_lists.tolist()))
    assert all(mapped[a] == list_of[a] for a in answers.tolist())
    assert index.last_search_stats["stale"] == []


def test_the_ledger_finds_most_new_answers_and_every_one_it_records_is_exact(data):
    keys, train, _, _ = data
    index = half_built(data)
    ledger: AnswerLedger = index._ledger
    assert ledger.queries.dtype == np.float16  # half the memory, where the queries fit
    assert AnswerLedger.stored(np.full((2, 3), 1e5, np.float32)).dtype == np.float32
    index.add(keys[N // 2 :])
    scores, best = ap.topk_dot(ledger.queries, keys, 1)
    right = ledger.answers == best[:, 0]
    assert right.mean() >= 0.85
    # a recorded answer is never better than the truth, and is exact where it is right
    assert (ledger.scores <= scores[:, 0] + 1e-4).all()
    np.testing.assert_allclose(ledger.scores[right], scores[right, 0], rtol=1e-5, atol=1e-5)


def test_a_graph_router_links_each_query_s_previous_answer_to_its_new_one(data):
    keys, _, _, _ = data
    index = half_built(data)
    ledger, router = index._ledger, index.router
    assert isinstance(router, PieceGraphRouter)
    before = ledger.answers.copy()
    index.add(keys[N // 2 :])
    changed = (before >= 0) & (ledger.answers != before)
    element = {int(i): e for e, i in enumerate(router.piece_ids.tolist()) if i >= 0}
    pairs = {
        (element[a], element[b])
        for a, b in zip(before[changed].tolist(), ledger.answers[changed].tolist())
        if a in element and b in element
    }
    assert len(pairs) > 50
    links = router.pieces.graph.arrays()["links0"]
    linked = [b in links[a, 1 : 1 + (links[a, 0] & 0xFFFF)] for a, b in pairs]
    assert np.mean(linked) >= 0.9  # an insertion after may prune a link, as it prunes any
    assert router.link_pieces(np.array([-1, 10**9]), np.array([next(iter(element)), 0])) == 0


def test_removed_keys_leave_the_router_and_their_queries_get_new_answers(data):
    keys, _, _, test = data
    index = half_built(data)
    index.add(keys[N // 2 :])
    ledger, router = index._ledger, index.router
    gone = np.intersect1d(ledger.answers, router.piece_ids)[:200]  # answers that are pieces
    assert len(gone) == 200
    orphans = np.isin(ledger.answers, gone)
    assert index.remove_ids(gone) == len(gone)
    assert not np.isin(gone, router.piece_ids).any()
    present = np.ones(N, bool)
    present[gone] = False
    rows = np.flatnonzero(present)
    _, best = ap.topk_dot(ledger.queries[orphans], keys[rows], 1)
    np.testing.assert_array_equal(ledger.answers[orphans], rows[best[:, 0]])  # lists are flat
    assert np.isin(ledger.answers[orphans], router.piece_ids).all()
    ids = index.search(test, 10)[1]
    assert not np.isin(ids, gone).any()
    old, new = found_top1(index, keys, present, test)
    assert min(old, new) >= 0.85


def test_reset_empties_the_router_and_the_next_keys_fill_it(data):
    keys, _, _, test = data
    index = half_built(data)
    index.reset()
    assert (index.router.piece_ids < 0).all() and (index._ledger.answers < 0).all()
    index.add_with_ids(keys[N // 2 :], np.arange(N // 2, N))
    best = N // 2 + ap.topk_dot(test, keys[N // 2 :], 1)[1][:, 0]
    assert (index.search(test, 1)[1][:, 0] == best).mean() >= 0.85
    assert (index._ledger.answers >= N // 2).all()


def test_merged_keys_are_taken_as_added(data):
    keys, _, _, test = data
    index = half_built(data)
    other = faiss.IndexIVFFlat(index.quantizer, D, NLIST, faiss.METRIC_INNER_PRODUCT)
    other.add_with_ids(keys[N // 2 :], np.arange(N // 2, N))
    index.merge_from(other)
    assert index.ntotal == N and other.ntotal == 0
    old, new = found_top1(index, keys, np.ones(N, bool), test)
    assert new >= old - 0.05


def test_a_router_that_cannot_follow_is_named_stale(data):
    keys, train, _, test = data
    index = half_built(data)
    hand_made = MaxAffineRouter.fit(*index.grouped_keys()[:2], train, 2 * NLIST)
    index.router = hand_made  # set by hand: no ledger
    index.search(test[:5], 10)
    assert index.last_search_stats["stale"] == []
    index.add(keys[N // 2 :])
    with pytest.warns(StaleWarning, match="router"):
        index.search(test[:5], 10)
    assert index.last_search_stats["stale"] == ["router"]
    index.fit_router(train)  # fitted again: current
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.search(test[:5], 10)
    assert index.last_search_stats["stale"] == []


def test_keys_added_from_cpp_leave_the_router_stale(data):
    keys, _, _, test = data
    index = half_built(data)
    faiss.IndexIVFFlat.add(index, keys[N // 2 :])  # faiss's own add, past this class
    with pytest.warns(StaleWarning):
        index.search(test[:5], 10)
    assert index.last_search_stats["stale"] == ["router"]


def test_vectors_updated_in_place_are_found_and_leave_the_router_stale(data):
    """``update_vectors`` keeps ntotal: the next search still reads the lists as they are now
    (the moved keys found where they went) and names the router stale."""
    keys, _, _, test = data
    index = half_built(data)
    index.search(test[:50], 10)  # a batch the core scans: the lists read once as they were
    index.make_direct_map()
    moved = np.arange(50)
    # each the direction of a test query, all of one large norm: that query's best key
    directions = test[:50] / np.linalg.norm(test[:50], axis=1, keepdims=True)
    index.update_vectors(moved, 100 * directions)
    with pytest.warns(StaleWarning, match="router"):
        _, ids = index.search(test[:50], 1, params=faiss.SearchParametersIVF(nprobe=NLIST))
    np.testing.assert_array_equal(ids[:, 0], moved)
    assert index.last_search_stats["stale"] == ["router"]
    with pytest.raises(ValueError, match=r"x must have shape \(n, 16\)|dimension"):
        index.update_vectors(moved, test[:50, :3])


def test_target_recall_is_measured_again_after_the_keys_change(data):
    keys, _, calibration, test = data
    index = half_built(data)
    index.search(test, 10, target_recall=0.9)
    assert index.last_search_stats["calibration"] == "current"
    present = np.zeros(N, bool)
    present[: N // 2] = True
    for part in np.array_split(np.arange(N // 2, N), 2):
        index.add(keys[part])
        present[part] = True
        for target in (0.9, 0.95):
            ids = index.search(test, 10, target_recall=target)[1]
            assert index.last_search_stats["calibration"] in ("measured again", "current")
            assert exact_recall(ids, keys, present, test) >= target - 0.02
    gone = np.arange(0, N, 7)
    index.remove_ids(gone)
    present[gone] = False
    ids = index.search(test, 10, target_recall=0.95)[1]
    assert index.last_search_stats["calibration"] == "measured again"
    assert exact_recall(ids, keys, present, test) >= 0.93
    index.search(test, 10, target_recall=0.95)
    assert index.last_search_stats["calibration"] == "current"


def test_without_auto_recalibrate_a_stale_calibration_is_refused(data, tmp_path):
    keys, _, _, test = data
    index = half_built(data)
    index.auto_recalibrate = False
    index.add(keys[N // 2 : N // 2 + 10])
    with pytest.raises(StaleCalibrationError, match="calibrate"):
        index.search(test, 10, target_recall=0.9)
    index.save(tmp_path / "stale.amips")  # the setting and the staleness are kept
    loaded = ap.AmortizedIVF.load(tmp_path / "stale.amips")
    with pytest.raises(StaleCalibrationError):
        loaded.search(test, 10, target_recall=0.9)
    loaded.auto_recalibrate = True
    loaded.search(test, 10, target_recall=0.9)
    assert loaded.last_search_stats["calibration"] == "measured again"


def test_a_compressed_index_asks_for_the_keys_to_calibrate_again(data):
    keys, train, calibration, test = data
    index = ap.AmortizedIVF.from_factory(D, f"IVF{NLIST},SQ8")
    index.train(keys[: N // 2])
    index.add(keys[: N // 2])
    index.fit_router(train, keys=keys[: N // 2], budget=BUDGET)
    index.calibrate(calibration, 10, keys=keys[: N // 2])
    index.add(keys[N // 2 :])  # the router follows: the raw keys pass through add
    assert index.router.piece_ids.max() >= N // 2
    with pytest.raises(StaleCalibrationError, match="keys="):
        index.search(test, 10, target_recall=0.9)
    index.calibrate(calibration, 10, keys=keys)
    index.search(test, 10, target_recall=0.9)


def test_files_keep_what_follows_the_keys(data, tmp_path, monkeypatch):
    monkeypatch.setenv("AMIPS_NUM_THREADS", "1")  # pieces inserted on one thread: the same graph
    keys, _, _, test = data
    index = half_built(data)
    index.save(tmp_path / "half.amips")
    loaded = ap.AmortizedIVF.load(tmp_path / "half.amips")
    assert len(loaded._ledger) == len(index._ledger)
    for ivf in (index, loaded):
        ivf.add(keys[N // 2 :])
    np.testing.assert_array_equal(loaded.router.piece_ids, index.router.piece_ids)
    np.testing.assert_array_equal(loaded.search(test, 10)[1], index.search(test, 10)[1])
    ids = loaded.search(test, 10, target_recall=0.9)[1]
    assert loaded.last_search_stats["calibration"] == "measured again"
    np.testing.assert_array_equal(ids, index.search(test, 10, target_recall=0.9)[1])


def test_graph_router_pieces_come_and_go_and_survive_a_file():
    rng = np.random.default_rng(1)
    pieces = rng.standard_normal((400, 8)).astype(np.float32)
    offsets = np.arange(0, 401, 40)
    router = PieceGraphRouter.build(pieces, offsets, 16, piece_ids=np.arange(400))
    loaded = PieceGraphRouter.from_bytes(router.to_bytes())
    strong = rng.standard_normal((3, 8)).astype(np.float32) * 20  # each wins its own direction
    for r in (router, loaded):
        r.add_pieces(strong, np.array([3, 5, 7]), np.array([1000, 1001, 1002]))
        ranked = r.rank(strong, 1, None, None)[:, 0]
        np.testing.assert_array_equal(ranked, [3, 5, 7])
        assert r.remove_pieces(np.array([1000, 1001, 1002, 5])) == 4
        assert not np.isin([1000, 1001, 1002, 5], r.piece_ids).any()
        assert (r.rank(strong, 1, None, None)[:, 0] != np.array([3, 5, 7])).any()
    again = PieceGraphRouter.from_bytes(router.to_bytes())
    np.testing.assert_array_equal(
        again.rank(pieces, 3, None, None), router.rank(pieces, 3, None, None)
    )


def test_max_affine_pieces_come_and_go_as_if_built_with_them():
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((57, 6)).astype(np.float32)
    lists = rng.integers(0, 5, 57)

    def router_of(rows):
        order = rows[np.argsort(lists[rows], kind="stable")]
        offsets = np.searchsorted(lists[order], np.arange(6))
        return MaxAffineRouter(vectors[order], offsets, piece_ids=order)

    router = router_of(np.arange(50))
    router.add_pieces(vectors[50:], lists[50:], np.arange(50, 57))
    assert router.remove_pieces(np.array([0, 1, 2, 50, 999])) == 4
    built = router_of(np.r_[np.arange(3, 50), np.arange(51, 57)])
    queries = rng.standard_normal((20, 6)).astype(np.float32)
    np.testing.assert_array_equal(router.scores(queries), built.scores(queries))
    assert sorted(router.piece_ids.tolist()) == sorted(built.piece_ids.tolist())


def test_hnsw_target_recall_is_measured_again_after_the_keys_change(data, tmp_path):
    keys, _, calibration, test = data
    graph = ap.AmortizedHNSW("ip", D)
    graph.init_index(N, M=12, ef_construction=100)
    graph.add_items(keys[: N // 2])
    graph.calibrate(calibration, 10)
    graph.knn_query(test, 10, target_recall=0.95)
    assert graph.last_search_stats["calibration"] == "current"
    present = np.zeros(N, bool)
    present[: N // 2] = True
    graph.add_items(keys[N // 2 :], np.arange(N // 2, N))
    present[N // 2 :] = True
    for label in range(0, N, 9):
        graph.mark_deleted(label)
        present[label] = False
    labels = graph.knn_query(test, 10, target_recall=0.95)[0].astype(np.int64)
    assert graph.last_search_stats["calibration"] == "measured again"
    assert exact_recall(labels, keys, present, test) >= 0.93
    graph.save_index(tmp_path / "g.amips")
    loaded = ap.AmortizedHNSW("ip", D)
    loaded.load_index(tmp_path / "g.amips", max_elements=N + 10)
    loaded.auto_recalibrate = False
    loaded.knn_query(test, 10, target_recall=0.95)  # current: measured on the saved keys
    loaded.add_items(keys[:10] * 3, np.arange(N, N + 10), replace_deleted=False)
    with pytest.raises(StaleCalibrationError):
        loaded.knn_query(test, 10, target_recall=0.95)


def test_a_target_recall_must_be_a_number(data):
    keys, _, calibration, test = data
    index = half_built(data)
    graph = ap.AmortizedHNSW("ip", D)
    graph.init_index(N // 2)
    graph.add_items(keys[: N // 2])
    graph.calibrate(calibration[:500], 10)
    for bad in ("0.9", b"0.9", True, [0.9]):  # as k="3" is refused
        with pytest.raises(TypeError, match="target_recall must be a number"):
            index.search(test[:5], 10, target_recall=bad)
        with pytest.raises(TypeError, match="target_recall must be a number"):
            graph.knn_query(test[:5], 10, target_recall=bad)
    index.search(test[:5], 10, target_recall=np.float32(0.9))
