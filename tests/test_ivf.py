import json
import pickle
import zipfile

import faiss
import numpy as np
import pytest

import amips_plugins as ap
from amips_plugins.effort import recall_per_query
from amips_plugins.ivf import FIRST_LISTS, AmortizedIVF
from amips_plugins.ivf import search as ivf_search
from amips_plugins.routing import MaxAffineRouter, PieceGraphRouter
from amips_plugins.routing.choice import default_budget
from conftest import beside_writer, call_from_threads, rewrite_member

D, NLIST = 12, 24


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((30, D)) * 2
    keys = centers[rng.integers(0, 30, 6000)] + rng.standard_normal((6000, D))
    keys = (keys * rng.lognormal(0, 0.4, (6000, 1))).astype(np.float32)
    queries = rng.standard_normal((3000, D)).astype(np.float32)
    return keys, queries[:2500], queries[2500:]


def build(keys, **kw):
    index = AmortizedIVF(faiss.IndexFlatIP(D) if not kw.get("xbox") else None, D, NLIST, **kw)
    index.train(keys)
    index.add(keys)
    return index


def match(index, keys, queries, nprobe=2):
    index.nprobe = nprobe
    _, ids = index.search(queries, 1)
    _, best = ap.topk_dot(queries, keys, 1)
    return (ids[:, 0] == best[:, 0]).mean()


def assert_true_inner_products(index, keys, queries, k=5):
    scores, ids = index.search(queries, k)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (len(queries), k)
    assert ((ids >= 0) & (ids < len(keys))).all()
    np.testing.assert_allclose(scores, ap.rescore(queries, keys, ids), rtol=1e-5, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_without_a_learned_part_it_returns_what_faiss_returns(data):
    keys, _, test = data
    ref = faiss.IndexIVFFlat(faiss.IndexFlatIP(D), D, NLIST, faiss.METRIC_INNER_PRODUCT)
    ours = AmortizedIVF(faiss.IndexFlatIP(D), D, NLIST, faiss.METRIC_INNER_PRODUCT)
    for index in (ref, ours):  # the same code drives both
        assert not index.is_trained
        index.train(keys)
        index.add(keys[:4000])
        index.add_with_ids(keys[4000:], np.arange(4000, 6000))
        index.nprobe = 3
    assert (ours.ntotal, ours.d, ours.nprobe, ours.is_trained) == (
        ref.ntotal,
        ref.d,
        ref.nprobe,
        True,
    )
    for k in (1, 10):
        D_ref, I_ref = ref.search(test, k)
        D_ours, I_ours = ours.search(test, k)
        np.testing.assert_array_equal(I_ours, I_ref)
        np.testing.assert_array_equal(D_ours, D_ref)
    ours.reset()
    assert ours.ntotal == 0 and ours.is_trained


def test_stats_count_the_lists_and_distances(data):
    keys, _, test = data
    index = build(keys)
    index.nprobe = 4
    faiss.cvar.indexIVF_stats.reset()
    faiss.downcast_index(index).search(test, 3)  # faiss's own search of the same lists
    plain = faiss.cvar.indexIVF_stats.ndis, faiss.cvar.indexIVF_stats.nq
    faiss.cvar.indexIVF_stats.reset()
    index.search(test, 3)
    assert (faiss.cvar.indexIVF_stats.ndis, faiss.cvar.indexIVF_stats.nq) == plain
    stats = index.last_search_stats
    assert stats["lists_probed"] == 4 and stats["queries"] == len(test)
    assert stats["distances"] == pytest.approx(plain[0] / len(test) + NLIST)
    assert stats["network_flops"] == 0 and stats["flops"] == pytest.approx(
        2 * D * stats["distances"]
    )


def test_max_affine_router_finds_more_best_keys_at_equal_nprobe(data):
    keys, train, test = data
    index = build(keys)
    plain = match(index, keys, test)
    assert index.fit_router(train, num_pieces=4 * NLIST) is None
    assert isinstance(index.router, MaxAffineRouter)
    routed = match(index, keys, test)
    assert routed > plain + 0.1, (plain, routed)
    assert_true_inner_products(index, keys, test)
    stats = index.last_search_stats
    assert stats["network_flops"] == 2 * index.router.multiply_adds()
    assert stats["distances"] < index.ntotal  # no coarse step, a few lists scanned


def test_search_lists_scans_the_lists_the_caller_chooses(data):
    keys, train, test = data
    index = build(keys, xbox=True)
    index.fit_router(train, num_pieces=NLIST)
    index.nprobe = 3
    lists = index.probed_lists(test)
    assert lists.shape == (len(test), 3) and lists.dtype == np.int64
    for got, want in zip(index.search_lists(test, 5, lists), index.search(test, 5)):
        np.testing.assert_array_equal(got, want)
    one = np.full((len(test), 2), -1)
    one[:, 0] = 4  # every query scans list 4 only
    _, ids = index.search_lists(test, 5, one)
    offsets, list_ids = index.list_ids()
    assert set(ids[ids >= 0].tolist()) <= set(list_ids[offsets[4] : offsets[5]].tolist())
    assert index.last_search_stats["lists_probed"] == 1
    assert index.last_search_stats["distances"] == offsets[5] - offsets[4]
    with pytest.raises(ValueError, match=f"lists must lie in -1 .. {NLIST - 1}"):
        index.search_lists(test, 5, one + NLIST)
    with pytest.raises(ValueError, match="lists has 2 rows"):
        index.search_lists(test, 5, one[:2])


def test_the_core_scans_the_lists_faiss_scans_and_follows_their_changes(data):
    """Where the lists are not faiss's own choice, the core scans them: the keys faiss's scan
    finds, their scores within rounding; keys added, removed or the lists replaced are seen by
    the next search; ids selected by ``params`` go to faiss's scan."""
    keys, _, test = data
    index = build(keys[:5000])
    index.nprobe = 4  # faiss's search_preassigned takes nprobe lists
    lists = index.probed_lists(test)

    def faiss_scan():
        zeros = np.zeros(lists.shape, np.float32)
        return faiss.IndexIVF.search_preassigned(index, test, 10, lists, zeros)

    D, I = index.search_lists(test, 10, lists)
    D_faiss, I_faiss = faiss_scan()
    np.testing.assert_array_equal(I, I_faiss)
    np.testing.assert_allclose(D, D_faiss, rtol=1e-5)
    index.add_with_ids(keys[5000:] * 3, np.arange(5000, 6000))  # long keys that win
    index.remove_ids(np.arange(0, 5000, 2))
    D, I = index.search_lists(test, 10, lists)
    assert (I >= 5000).mean() > 0.5 and not np.isin(I, np.arange(0, 5000, 2)).any()
    np.testing.assert_array_equal(I, faiss_scan()[1])
    empty, fresh = (faiss.ArrayInvertedLists(NLIST, index.code_size) for _ in range(2))
    index.replace_invlists(empty, False)  # the same ntotal, other lists
    D, I = index.search_lists(test, 10, lists)
    assert (I == -1).all() and (D == -np.finfo(np.float32).max).all()
    index.replace_invlists(fresh, False)
    index.add_with_ids(keys[:10], np.arange(10))
    odd = faiss.SearchParametersIVF(nprobe=4, sel=faiss.IDSelectorBatch(np.arange(1, 10, 2)))
    _, I = index.search_lists(test, 10, lists, params=odd)
    assert set(I[I >= 0].tolist()) <= {1, 3, 5, 7, 9}


def test_a_query_finds_the_same_keys_alone_and_in_a_batch(data):
    """A batch, whose lists the core packs, and queries alone, whose lists it reads row by row:
    the same keys."""
    keys, train, test = data
    index = build(keys)
    index.fit_router(train, num_pieces=NLIST)
    D, I = index.search(test[:40], 10)
    for i in range(0, 40, 7):
        D_one, I_one = index.search(test[i : i + 1], 10)
        np.testing.assert_array_equal(I_one[0], I[i])
        np.testing.assert_allclose(D_one[0], D[i], rtol=1e-5)


def test_a_calibrated_query_scans_the_same_lists_alone_and_in_a_batch(data):
    """target_recall: a batch deepens on the core in one call, a query alone through faiss's
    scan (ids selected) in two; each query gets the same nprobe and finds the same keys."""
    keys, train, test = data
    index = build(keys)
    index.fit_router(train[:1500], num_pieces=NLIST)
    index.calibrate(train[1500:], 10)
    D, I = index.search(test[:40], 10, target_recall=0.95)
    nprobe = index.last_search_stats["nprobe_per_query"]
    assert len(set(nprobe.tolist())) > 1  # queries of different groups
    every = faiss.SearchParametersIVF(sel=faiss.IDSelectorAll())  # faiss's scan
    for i in range(0, 40, 3):
        D_one, I_one = index.search(test[i : i + 1], 10, target_recall=0.95, params=every)
        assert index.last_search_stats["nprobe_per_query"].tolist() == [nprobe[i]]
        np.testing.assert_array_equal(I_one[0], I[i])
        np.testing.assert_allclose(D_one[0], D[i], rtol=1e-5)


@pytest.mark.parametrize("by_residual", [True, False])
def test_the_core_scans_float16_lists_as_faiss_does(data, by_residual):
    """``SQfp16`` lists (rows of halves, of the key or of its residual from the list's
    centroid) scanned on the core: the keys faiss's scan finds, their scores within rounding."""
    keys, _, test = data
    index = AmortizedIVF.from_factory(D, f"IVF{NLIST},SQfp16")
    index.by_residual = by_residual
    index.train(keys)
    index.add(keys)
    index.nprobe = 4
    lists = index.probed_lists(test)
    zeros = np.zeros(lists.shape, np.float32)
    centroid_scores = index._centroid_scores(test, lists) if by_residual else zeros
    D_faiss, I_faiss = faiss.IndexIVF.search_preassigned(index, test, 10, lists, centroid_scores)
    D_ours, I_ours = index.search_lists(test, 10, lists)
    assert (I_ours == I_faiss).all(axis=1).mean() > 0.98  # a row may differ where scores tie
    np.testing.assert_allclose(D_ours, D_faiss, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("by_residual", [True, False])
def test_the_core_scans_fast_scan_lists_as_faiss_does(data, by_residual):
    """4-bit fast-scan codes (``PQ..x4fs``) are scanned on the core, in faiss's own blocks: the
    keys faiss's scan finds but where scores tie or sit within the byte tables' rounding of the
    k-th; and a search with an id selector (which faiss scans) finds the same."""
    keys, _, test = data
    index = AmortizedIVF.from_factory(D, f"IVF{NLIST},PQ{D // 2}x4fs")
    index.by_residual = by_residual
    index.train(keys)
    index.add(keys)
    index.nprobe = 4
    lists = index.probed_lists(test)
    assert index._list_views(None) is not None
    centroid_scores = index._centroid_scores(test, lists)
    D_faiss, I_faiss = faiss.IndexIVF.search_preassigned(index, test, 10, lists, centroid_scores)
    D_ours, I_ours = index.search_lists(test, 10, lists)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I_ours, I_faiss)])
    assert overlap > 0.95
    np.testing.assert_allclose(D_ours[:, 0], D_faiss[:, 0], atol=0.05 * np.abs(D_faiss).mean())
    every = faiss.SearchParametersIVF(sel=faiss.IDSelectorAll(), nprobe=4)
    _, I_selected = index.search_lists(test, 10, lists, params=every)
    np.testing.assert_array_equal(I_selected, I_faiss)


@pytest.mark.parametrize("codes", ["Flat", "SQfp16", f"PQ{D // 2}x4fs,Refine(SQfp16)"])
@pytest.mark.parametrize("union", [False, True])
def test_a_calibrated_search_in_one_call_gives_the_results_of_its_steps(
    data, codes, union, monkeypatch
):
    """A graph router's calibrated search over lists the core scans takes its steps (the walk,
    faiss's ranking in turn or filling the rows a narrow walk leaves short, the deepening scan,
    the re-ranking) in one call into the core: the results and stats of the steps called one at
    a time, for a batch, one query and none."""
    keys, train, test = data
    index = AmortizedIVF.from_factory(D, f"IVF{NLIST},{codes}")
    index.train(keys)
    index.add(keys)
    index.fit_router(train[:1500], num_pieces=2 * NLIST, keys=keys)
    index.router = PieceGraphRouter.build(index.router.pieces, index.router.offsets, ef=6)
    index.probe_union = union
    index.calibrate(train[1500:], 10, keys=keys)
    one_call = ivf_search._core.routed_search
    calls = []
    monkeypatch.setattr(
        ivf_search._core, "routed_search", lambda *a: calls.append(1) or one_call(*a)
    )
    compared = ("nprobe_per_query", "lists_probed", "distances", "network_flops", "flops")
    found = {}
    for path in ("one call", "steps"):
        if path == "steps":
            monkeypatch.setattr(type(index), "_routed_on_core", lambda *a: None)
        found[path] = []
        for queries in (test, test[7:8], test[:0]):
            for target in (0.8, 0.95):
                D_, I_ = index.search(queries, 10, target_recall=target)
                stats = index.last_search_stats
                found[path].append((D_, I_, *(stats[name] for name in compared)))
                beam = stats["router_ef"] or index.router.ef
    assert len(calls) == 6
    assert found["one call"][-1][1].shape == (0, 10)
    walked = index.router.with_ef(beam).rank(test, NLIST, index, None)
    # rows the walk left short (fewer lists than the scan reached) were filled
    assert ((walked >= 0).sum(axis=1) < found["one call"][1][2]).any()
    for one, steps in zip(found["one call"], found["steps"]):
        for a, b in zip(one, steps):
            np.testing.assert_array_equal(a, b)


def test_the_one_call_search_refuses_arguments_that_disagree(data):
    """``_core.routed_search`` checks what its caller passes: pieces' lists, nprobe, depth, and
    ids beyond the raw keys."""
    keys, train, test = data
    index = AmortizedIVF.from_factory(D, f"IVF{NLIST},Flat")
    index.train(keys)
    index.add(keys)
    index.fit_router(train[:1500], num_pieces=2 * NLIST)
    index.router = PieceGraphRouter.build(index.router.pieces, index.router.offsets, ef=6)
    pieces, views = index.router.pieces, index._list_views(None)
    panels, n_packed, tail = index._read_centroids().panels
    rule = ap._core.Deepening(2, 10, np.array([0.5]), np.array([3, 5]))

    def call(element_lists=pieces.element_lists, nprobe=5, depth=10, raw=None):
        args = (pieces.graph, element_lists, 6, nprobe, panels, n_packed, tail, True, None, views)
        return ap._core.routed_search(test[:3], *args, rule, depth, raw, 10)

    assert call()[1].shape == (3, 10)
    with pytest.raises(ValueError, match="element_lists"):
        call(element_lists=pieces.element_lists[:-1])
    with pytest.raises(ValueError, match="element_lists must lie"):
        call(element_lists=np.full_like(pieces.element_lists, NLIST))
    with pytest.raises(ValueError, match="nprobe"):
        call(nprobe=NLIST + 1)
    with pytest.raises(ValueError, match="depth"):
        call(depth=12)
    with pytest.raises(ValueError, match="beyond the 100 raw keys"):
        call(depth=20, raw=keys[:100])


def test_take_in_turn_merges_two_rankings_without_repeats():
    from amips_plugins.routing.in_turn import take_in_turn

    a = np.array([[3, 1, 4, 0], [5, 6, 7, 8]])
    b = np.array([[3, 4, 2, 9], [8, 7, 6, 5]])
    np.testing.assert_array_equal(take_in_turn(a, b, 4), [[3, 1, 4, 2], [5, 8, 6, 7]])


class ReverseCentroids:
    """A router of this test's own: faiss's centroid ranking, read from the worst end."""

    member = "router.reverse"

    def __init__(self, dim, num_outputs):
        self.dim, self.num_outputs = dim, num_outputs

    def rank(self, queries, nprobe, index, params):
        return index.quantizer.search(queries, index.nlist)[1][:, ::-1][:, :nprobe]

    def cost(self, index, nprobe):
        return 7, index.nlist

    def to_bytes(self):
        return b""


def test_any_object_with_the_router_protocol_chooses_the_lists(data, tmp_path):
    keys, _, test = data
    index = build(keys)
    index.router = ReverseCentroids(D, NLIST)
    index.nprobe = 3
    _, ids = index.search(test[:50], 5)
    worst = index.quantizer.search(test[:50], NLIST)[1][:, -3:]
    assign = index.quantizer.search(keys, 1)[1][:, 0]
    found = ids[ids >= 0]
    assert np.isin(assign[found], worst).all() and len(found) > 0
    stats = index.last_search_stats
    assert stats["network_flops"] == 7
    assert stats["flops"] == pytest.approx(2 * stats["distances"] * D + 7)
    with pytest.raises(ValueError, match="cannot be saved.*router.reverse"):
        index.save(tmp_path / "x.amips")
    with pytest.raises(ValueError, match="outputs"):
        index.router = ReverseCentroids(D, NLIST + 1)
    with pytest.raises(TypeError, match="protocol"):
        index.router = "centroids"


def test_nprobe_nlist_is_exhaustive_whatever_lists_the_router_finds(data):
    keys, train, test = data
    index = build(keys)
    index.fit_router(train, num_pieces=4 * NLIST)
    # A walk of beam 2 finds at most 2 lists: faiss's ranking must give the rest.
    index.router = PieceGraphRouter.build(index.router.pieces, index.router.offsets, ef=2)
    index.probe_union = False
    assert (index.probed_lists(test[:50], params=None) >= 0).all()
    index.nprobe = NLIST
    _, ids = index.search(test, 1)
    _, best = ap.topk_dot(test, keys, 1)
    np.testing.assert_array_equal(ids, best)


def test_probe_union_scans_the_lists_of_both_rankings(data):
    keys, train, test = data
    index = build(keys)
    index.fit_router(train)
    best = {}
    for union, nprobe in ((False, 2), (True, 4)):
        index.probe_union = union
        index.nprobe = nprobe
        best[union] = index.search(test, 1)[0][:, 0]
        assert index.last_search_stats["lists_probed"] == nprobe
    index.router = None
    index.nprobe = 2
    plain = index.search(test, 1)[0][:, 0]
    # At nprobe 4 the union holds the first two lists of each ranking: at least as good a key.
    assert (best[True] >= np.maximum(best[False], plain)).all()
    assert (best[True] > np.maximum(best[False], plain)).any()


def test_probe_union_ranks_the_centroids_on_the_core_as_faiss_does(data):
    """Beside a learned ranking, faiss's ranking of the lists is computed by the core from the
    centroids of a flat quantizer (the same lists); with quantizer_params, or a quantizer that
    is not flat, it is faiss's own search."""
    keys, train, test = data
    index = build(keys)
    index.fit_router(train)
    index.probe_union = True
    for nprobe in (1, 5, NLIST):
        want = index.quantizer.search(test, nprobe)[1]
        np.testing.assert_array_equal(index._ranked_centroids(test, nprobe, None), want)
    with_params = faiss.SearchParametersIVF(quantizer_params=faiss.SearchParameters(), nprobe=6)
    assert index._ranked_centroids(test, 6, with_params) is None
    index.nprobe = 6
    np.testing.assert_array_equal(
        index.probed_lists(test), index.probed_lists(test, params=with_params)
    )
    hnsw = AmortizedIVF.from_factory(D, f"IVF{NLIST}_HNSW8,Flat")
    hnsw.train(keys)
    assert hnsw._ranked_centroids(test, 6, None) is None


def test_probe_union_by_default_only_with_the_max_affine_router(data):
    keys, train, test = data
    index = build(keys)
    index.nprobe = 4
    index.fit_router(train, num_pieces=16 * NLIST)
    results = {}
    for union in (None, True, False):
        index.probe_union = union
        results[union] = index.search(test, 3)[1]
    np.testing.assert_array_equal(results[None], results[True])
    assert (results[None] != results[False]).any()
    pytest.importorskip("torch")
    index.fit_router(
        train, ap.SupportNet(D, NLIST, width=8, depth=1), steps=5, eval_every=5, progress=False
    )
    for union in (None, False):
        index.probe_union = union
        results[union] = index.search(test, 3)[1]
    np.testing.assert_array_equal(results[None], results[False])


def test_xbox_lists_keep_exact_inner_products(data):
    keys, train, test = data
    index = build(keys, xbox=True)
    assert index.d == D + 1 and index.xbox.count == len(keys)  # faiss's d: augmented keys
    assert_true_inner_products(index, keys, test)
    index.fit_router(train)
    assert_true_inner_products(index, keys, test)


def test_query_transform_and_supportnet_router(data):
    torch = pytest.importorskip("torch")
    keys, train, test = data
    index = build(keys)
    history = index.fit_query_transform(
        train,
        ap.KeyNet(D, width=32, depth=2),
        steps=30,
        eval_every=30,
        progress=False,
        device="cpu",
    )
    assert history[-1]["step"] == 30 and index.query_transform is not None
    assert_true_inner_products(index, keys, test)
    assert index.last_search_stats["network_flops"] == 2 * index.query_transform.key_multiply_adds()

    index.query_transform = None
    torch.manual_seed(0)
    index.fit_router(
        train,
        ap.SupportNet(D, NLIST, width=32, depth=2, homogeneous=True),
        steps=30,
        eval_every=30,
        progress=False,
        device="cpu",
    )
    assert_true_inner_products(index, keys, test)
    with pytest.raises(ValueError, match="outputs"):
        index.fit_router(train, ap.SupportNet(D, NLIST + 1, width=8, depth=1))


def test_a_model_for_other_keys_is_refused(data):
    pytest.importorskip("torch")
    keys, train, _ = data
    model = ap.KeyNet(D, width=16, depth=1)
    ap.fit(model, keys[:3000], train, steps=5, eval_every=5, progress=False, device="cpu")
    index = build(keys)
    with pytest.raises(ValueError, match="trained for keys"):
        index.query_transform = model
    good = ap.KeyNet(D, width=16, depth=1)
    ap.fit(good, keys, train, steps=5, eval_every=5, progress=False, device="cpu")
    index.query_transform = good  # trained for exactly these keys (in id order)
    with pytest.raises(ValueError, match="one-output"):
        index.query_transform = ap.KeyNet(D, num_outputs=2, width=8, depth=1)


def test_default_fit_router_keeps_the_best_held_out_choice_within_the_budget(data, tmp_path):
    keys, train, test = data
    by_faiss = build(keys)  # faiss's own ranking: its cost at 4 probes is the budget
    by_faiss.nprobe = 4
    by_faiss.search(train, 1)
    budget = by_faiss.last_search_stats["flops"]
    index = build(keys)
    report = index.fit_router(train, budget=budget)
    assert all(row["flops"] <= budget for row in report)
    assert [row["top1"] for row in report] == sorted((row["top1"] for row in report), reverse=True)
    chosen = "faiss centroids" if index.router is None else repr(index.router)
    chosen += " + centroids" if index.router is not None and index.probe_union else ""
    assert (report[0]["router"], report[0]["nprobe"]) == (chosen, index.nprobe)
    faiss_row = next(row for row in report if row["router"] == "faiss centroids")
    # on unseen queries: more best keys than faiss's ranking at its most within the budget
    found = match(index, keys, test, index.nprobe)
    assert found > match(by_faiss, keys, test, faiss_row["nprobe"]) + 0.1
    assert index.last_search_stats["flops"] <= 1.1 * budget
    index.save(tmp_path / "index.amips")
    loaded = AmortizedIVF.load(tmp_path / "index.amips")
    assert (repr(loaded.router), loaded.probe_union, loaded.nprobe) == (
        repr(index.router),
        index.probe_union,
        index.nprobe,
    )
    np.testing.assert_array_equal(loaded.search(test, 5)[1], index.search(test, 5)[1])
    with pytest.raises(ValueError, match="below every router's cost"):
        index.fit_router(train, budget=1.0)
    with pytest.raises(ValueError, match="budget must be a positive number"):
        index.fit_router(train, budget=float("nan"))
    with pytest.raises(ValueError, match="at least 10 distinct training queries"):
        index.fit_router(train[:9])


def test_copies_of_training_queries_are_never_both_fitted_and_held_out(data):
    keys, train, _ = data
    index = build(keys)
    with pytest.raises(ValueError, match="10 distinct training queries, got 1 among 500"):
        index.fit_router(np.repeat(train[:1], 500, axis=0))
    few = np.repeat(train[:40], 25, axis=0)  # 40 distinct for 24 lists
    with pytest.warns(UserWarning, match="40 distinct training queries for 24 lists"):
        report = index.fit_router(few)
    # Measured on 4 held-out queries that were not fitted, no router finds all of them at
    # nprobe 1; fitted on their copies, the piece graph would.
    assert all(row["top1"] < 1 or row["nprobe"] > 1 for row in report)


def test_default_budget_is_faiss_at_five_percent_of_the_lists_rounded_down():
    assert [default_budget(n) for n in (1, 19, 20, 316, 343, 547)] == [1, 1, 1, 15, 17, 27]


def test_save_and_load_round_trip(data, tmp_path):
    keys, train, test = data
    index = build(keys, xbox=True)
    index.fit_router(train)
    index.probe_union, index.nprobe = True, 3  # fit_router chose its own
    path = tmp_path / "index.amips"
    index.save(path)
    loaded = AmortizedIVF.load(path)
    assert (loaded.nprobe, loaded.ntotal, loaded.xbox.max_norm) == (
        3,
        index.ntotal,
        index.xbox.max_norm,
    )
    assert loaded.probe_union
    for a, b in zip(index.search(test, 5), loaded.search(test, 5)):
        np.testing.assert_array_equal(a, b)
    loaded.add(keys[:10])  # the Xbox state goes on from where it was
    assert loaded.xbox.count == len(keys) + 10


def test_save_and_load_a_query_transform(data, tmp_path):
    pytest.importorskip("torch")
    keys, train, test = data
    index = build(keys)
    index.fit_query_transform(
        train,
        ap.KeyNet(D, width=16, depth=1),
        steps=10,
        eval_every=10,
        progress=False,
        device="cpu",
    )
    index.save(tmp_path / "i")
    loaded = AmortizedIVF.load(tmp_path / "i")
    for a, b in zip(index.search(test, 5), loaded.search(test, 5)):
        np.testing.assert_array_equal(a, b)


def test_loading_a_foreign_or_corrupt_file_fails_clearly(data, tmp_path):
    keys, _, _ = data
    index = build(keys)
    faiss.write_index(index, str(tmp_path / "plain.faiss"))
    with pytest.raises(ValueError, match="not a readable AmortizedIVF"):
        AmortizedIVF.load(tmp_path / "plain.faiss")
    index.save(tmp_path / "good")
    (tmp_path / "cut").write_bytes((tmp_path / "good").read_bytes()[:300])
    with pytest.raises(ValueError):
        AmortizedIVF.load(tmp_path / "cut")


def test_concurrent_searches_agree_with_serial_ones(data):
    keys, train, test = data
    index = build(keys)
    index.fit_router(train)
    index.nprobe = 3
    expected = index.search(test, 4)
    for D, I in call_from_threads(lambda: index.search(test, 4), 6):
        np.testing.assert_array_equal(I, expected[1])
        np.testing.assert_array_equal(D, expected[0])


def test_bad_input(data):
    keys, train, test = data
    with pytest.raises(ValueError, match="inner product"):
        AmortizedIVF(faiss.IndexFlatL2(D), D, NLIST, faiss.METRIC_L2)
    with pytest.raises(ValueError, match="dimension"):
        AmortizedIVF(faiss.IndexFlatIP(D + 1), D, NLIST)
    with pytest.raises(TypeError, match="IndexIVFFlat"):
        AmortizedIVF.from_faiss(faiss.IndexFlatIP(D))
    index = AmortizedIVF(None, D, NLIST)
    with pytest.raises(ValueError, match="train"):
        index.add(keys)
    with pytest.raises(ValueError, match="train"):
        index.search(test, 1)
    with pytest.raises(ValueError, match="at least nlist"):
        index.train(keys[:5])
    index.train(keys)
    with pytest.raises(ValueError, match="add keys"):
        index.fit_router(train)
    index.add(keys)
    with pytest.raises(ValueError, match="dimension"):
        index.search(test[:, :-1], 1)
    bad = test.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.search(bad, 1)
    with pytest.raises(ValueError, match="positive"):
        index.search(test, 0)
    with pytest.raises(ValueError, match="ids"):
        index.add_with_ids(keys[:3], np.arange(2))
    n = index.ntotal
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.vstack([keys[:3], bad[:1]]))
    assert index.ntotal == n  # nothing half-added
    with pytest.raises(ValueError, match="outputs"):
        index.router = MaxAffineRouter(keys[:5], np.array([0, 5]))
    index.nprobe = 3
    _, ids = index.search(test[:2], 50_000)  # k beyond ntotal: padded as faiss pads
    assert (ids[:, index.ntotal :] == -1).all()
    with pytest.raises(ValueError, match="padding 2 rows to k would take"):
        index.search(test[:2], 10**12)


def test_from_faiss_wraps_an_existing_index(data):
    keys, train, test = data
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(D), D, NLIST, faiss.METRIC_INNER_PRODUCT)
    ivf.train(keys)
    ivf.add(keys)
    wrapped = AmortizedIVF.from_faiss(ivf)
    assert wrapped.ntotal == len(keys)
    wrapped.add(keys[:1])
    assert ivf.ntotal == len(keys) + 1  # shared, not copied
    wrapped.fit_router(train)
    assert match(wrapped, keys, test) > 0.5


# --- files, ids and threads ---------------------------------------------------------------------
def _with_meta(**change):
    return lambda blob: json.dumps({**json.loads(blob), **change}).encode()


def test_load_checks_meta_against_the_faiss_payload(data, tmp_path):
    keys, _, _ = data
    path = tmp_path / "index.amips"
    cases = [
        (build(keys), _with_meta(d=2), "dimension"),
        (build(keys), _with_meta(nprobe=0), "nprobe"),
        (build(keys), _with_meta(probe_union="yes"), "probe_union"),
        (build(keys, xbox=True), _with_meta(xbox={"dim": 3, "max_norm": 1.0, "count": 1}), "dim"),
        (build(keys), _with_meta(xbox={"dim": D, "max_norm": 1.0, "count": 1}), "Xbox"),
    ]
    for index, change, match in cases:
        index.save(path)
        rewrite_member(path, "meta.json", change)
        with pytest.raises(ValueError, match=match):
            AmortizedIVF.load(path)


def test_load_refuses_an_l2_index_and_an_oversized_member(data, tmp_path):
    keys, _, _ = data
    index = build(keys)
    path = tmp_path / "index.amips"
    index.save(path)
    l2 = faiss.IndexIVFFlat(faiss.IndexFlatL2(D), D, NLIST, faiss.METRIC_L2)
    l2.train(keys)
    rewrite_member(path, "index.faiss", lambda _: faiss.serialize_index(l2).tobytes())
    with pytest.raises(ValueError, match="inner-product"):
        AmortizedIVF.load(path)
    index.save(path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, blob in members.items():
            z.writestr(n, blob + bytes(20_000_000) if n == "index.faiss" else blob)
    with pytest.raises(ValueError, match="more than its archive"):
        AmortizedIVF.load(path)


def test_add_with_ids_refuses_minus_one_and_wrapping_ids(data):
    keys, _, _ = data
    index = build(keys[:100])
    for ids in (np.array([5, -1]), np.array([5, 2**63 + 3], np.uint64)):
        with pytest.raises(ValueError):
            index.add_with_ids(keys[:2], ids)
    assert index.ntotal == 100


def test_add_with_ids_takes_a_tensor_that_requires_grad(data):
    torch = pytest.importorskip("torch")
    keys, _, _ = data
    index = build(keys[:100])
    index.add_with_ids(torch.tensor(keys[:3], requires_grad=True), np.array([1000, 1001, 1002]))
    assert index.ntotal == 103


def test_a_quantizer_must_be_a_faiss_index():
    with pytest.raises(TypeError, match="quantizer"):
        AmortizedIVF("x", D, NLIST)


def test_zero_queries_with_a_query_transform(data):
    pytest.importorskip("torch")
    from amips_plugins.learn.models import KeyNet

    keys, _, _ = data
    index = build(keys)
    index.query_transform = KeyNet(D)
    D_, I = index.search(np.empty((0, D), np.float32), 3)
    assert D_.shape == I.shape == (0, 3)


def test_searches_and_saves_beside_add_and_reset_see_whole_states(data, tmp_path):
    keys, train, test = data
    index = build(keys[:1200])
    index.fit_router(train[:500])
    index.nprobe = NLIST  # every list: each state has one right answer
    parts = np.array_split(np.arange(1200), 4)
    states = []  # what a search returns in each state the writer passes through
    for stored in range(len(parts) + 1):
        index.reset()
        for part in parts[:stored]:
            index.add_with_ids(keys[part], part)
        states.append(index.search(test[:40], 3))

    def is_a_state(result):
        return any(all(np.array_equal(a, b) for a, b in zip(result, s)) for s in states)

    def search():
        assert is_a_state(index.search(test[:40], 3))

    saves = iter(range(10**6))

    def save_and_load():
        path = tmp_path / f"{next(saves)}.ivf"
        index.save(path)
        loaded = AmortizedIVF.load(path)
        loaded.nprobe = NLIST
        assert is_a_state(loaded.search(test[:40], 3))
        path.unlink()

    def write():
        for _ in range(25):
            index.reset()
            for part in parts:  # lists grow (and move) in steps
                index.add_with_ids(keys[part], part)

    calls = beside_writer([search, search, save_and_load], write)
    assert min(calls) > 0


def test_pickle_round_trip_gives_the_same_results(data):
    import pickle

    keys, train, test = data
    index = build(keys)
    index.fit_router(train)
    copy = pickle.loads(pickle.dumps(index))
    np.testing.assert_array_equal(copy.search(test, 4)[1], index.search(test, 4)[1])
    copy.add(keys[:10])  # its lock works
    assert copy.ntotal == index.ntotal + 10


# --- drop-in for faiss.IndexIVFFlat -------------------------------------------------------------


def test_faiss_functions_take_it_as_the_index_ivf_flat_it_is(data, tmp_path):
    keys, _, test = data
    index = build(keys)
    index.nprobe = 3
    want = index.search(test, 4)  # no learned part: faiss's own results
    assert isinstance(index, faiss.IndexIVFFlat)
    faiss.write_index(index, str(tmp_path / "plain.faiss"))
    for other in (
        faiss.read_index(str(tmp_path / "plain.faiss")),
        faiss.deserialize_index(faiss.serialize_index(index)),
        faiss.clone_index(index),
    ):
        assert type(other) is faiss.IndexIVFFlat and other.ntotal == index.ntotal
        other.nprobe = 3
        np.testing.assert_array_equal(other.search(test, 4)[1], want[1])
    shards = faiss.IndexShards(D)
    shards.add_shard(index)
    np.testing.assert_array_equal(shards.search(test, 4)[1], want[1])
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", 5)
    assert index.nprobe == 5
    assert faiss.extract_index_ivf(index).nlist == NLIST
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT and index.code_size == 4 * D
    index.make_direct_map()
    np.testing.assert_array_equal(index.reconstruct(17), keys[17])


def test_containers_see_the_plain_index_and_pickle_keeps_the_learned_part(data):
    import copy
    import pickle

    keys, train, test = data
    index = build(keys)
    index.fit_router(train, num_pieces=16 * NLIST)  # a learned router, whatever the budget
    index.nprobe = 2
    learned = index.search(test, 4)[1]
    shards = faiss.IndexShards(D)
    shards.add_shard(index)  # C++ calls IndexIVFFlat::search: faiss's quantizer, not the router
    np.testing.assert_array_equal(
        shards.search(test, 4)[1], faiss.downcast_index(index).search(test, 4)[1]
    )
    assert (shards.search(test, 4)[1] != learned).any()
    for copied in (pickle.loads(pickle.dumps(index)), copy.deepcopy(index)):
        assert type(copied) is AmortizedIVF and copied.router is not None
        np.testing.assert_array_equal(copied.search(test, 4)[1], learned)
    again = AmortizedIVF.deserialize(index.serialize())
    np.testing.assert_array_equal(again.search(test, 4)[1], learned)


def test_search_params_apply_to_one_call_and_threads_do_not_share_them(data):
    keys, train, test = data
    index = build(keys)
    index.fit_router(train)
    index.nprobe = 1
    want = {}
    for nprobe in (1, 6):
        index.nprobe = nprobe
        want[nprobe] = index.search(test, 5)
    index.nprobe = 1
    for nprobe in (1, 6):
        got = index.search(test, 5, params=faiss.SearchParametersIVF(nprobe=nprobe))
        np.testing.assert_array_equal(got[1], want[nprobe][1])
    assert index.nprobe == 1

    def both():
        wide = index.search(test, 5, params=faiss.SearchParametersIVF(nprobe=6))
        narrow = index.search(test, 5, params=faiss.SearchParametersIVF(nprobe=1))
        return np.array_equal(wide[1], want[6][1]) and np.array_equal(narrow[1], want[1][1])

    assert all(call_from_threads(lambda: all(both() for _ in range(20)), 4))


def test_search_params_select_ids_and_cap_codes(data):
    keys, _, test = data
    index = build(keys)
    index.nprobe = NLIST
    keep = np.arange(0, len(keys), 7)
    _, ids = index.search(
        test, 5, params=faiss.SearchParametersIVF(nprobe=NLIST, sel=faiss.IDSelectorBatch(keep))
    )
    _, best = ap.topk_dot(test, keys[keep], 5)
    np.testing.assert_array_equal(ids, keep[best])
    index.max_codes = 50  # faiss's own attribute, honoured
    index.search(test, 5)
    assert index.last_search_stats["distances"] <= 50 + NLIST + keys.shape[0] / NLIST
    with pytest.raises(AttributeError):
        index.max_code = 50  # a misspelt attribute is refused, as faiss refuses it
    with pytest.raises(TypeError, match="SearchParametersIVF"):
        index.search(test, 5, params={"nprobe": 2})


def test_results_go_into_given_arrays(data):
    keys, _, test = data
    index = build(keys)
    D_, I = np.empty((len(test), 3), np.float32), np.empty((len(test), 3), np.int64)
    out = index.search(test, 3, D=D_, I=I)
    assert out[0] is D_ and out[1] is I
    np.testing.assert_array_equal(I, index.search(test, 3)[1])
    with pytest.raises(ValueError, match="I must be a int64 array of shape"):
        index.search(test, 3, I=np.empty((len(test), 2), np.int64))


def test_errors_are_also_the_exceptions_faiss_raises(data):
    keys, _, test = data
    fresh = AmortizedIVF(faiss.IndexFlatIP(D), D, NLIST)
    with pytest.raises(RuntimeError, match="train the index first"):
        fresh.add(keys)
    with pytest.raises(ValueError, match="train the index first"):
        fresh.search(test, 1)
    index = build(keys)
    with pytest.raises(AssertionError, match="dimension 12"):
        index.search(test[:, :5], 1)
    with pytest.raises(ValueError, match="dimension 12"):
        index.add(keys[:, :5])


def test_remove_ids_and_merge_from_keep_the_index_consistent(data):
    keys, _, test = data
    index = build(keys[:3000])
    index.nprobe = NLIST
    assert index.remove_ids(np.arange(0, 3000, 2)) == 1500
    _, ids = index.search(test, 3)
    assert (ids % 2 == 1).all()
    other = AmortizedIVF.deserialize(index.serialize())  # the same centroids
    other.reset()
    other.add_with_ids(keys[3000:], np.arange(3000, len(keys)))
    index.merge_from(other)
    assert index.ntotal == 1500 + len(keys) - 3000 and other.ntotal == 0
    _, ids = index.search(test, 1)
    _, best = ap.topk_dot(test, keys, 1)
    assert (ids[best % 2 == 1] == best[best % 2 == 1]).all()


# --- every faiss IVF index -----------------------------------------------------------------------
COMPRESSED = ["IVF20,PQ4x4", "IVF20,SQ8", "IVF20,PQ4x4fs"] + (
    ["IVF20,RaBitQ"] if hasattr(faiss, "IndexIVFRaBitQ") else []
)


@pytest.fixture(scope="module", params=COMPRESSED)
def compressed(request, data):
    keys, train, test = data
    index = AmortizedIVF.from_factory(D, request.param)
    index.train(keys)
    index.add(keys)
    return index


def test_compressed_indexes_without_a_learned_part_return_what_faiss_returns(compressed, data):
    _, _, test = data
    plain = faiss.clone_index(compressed)  # faiss's own class, the same codes
    assert type(compressed).__name__ == "Amortized" + type(plain).__name__.removeprefix("Index")
    for nprobe in (1, 5):
        compressed.nprobe = plain.nprobe = nprobe
        D_ours, I_ours = compressed.search(test, 10)
        D_faiss, I_faiss = plain.search(test, 10)
        np.testing.assert_array_equal(I_ours, I_faiss)
        # Residual codes add q . centroid, which the core computes for the chosen lists.
        np.testing.assert_allclose(D_ours, D_faiss, rtol=1e-5, atol=1e-5)


def test_compressed_indexes_learn_from_the_raw_keys(compressed, data, tmp_path):
    keys, train, test = data
    with pytest.raises(ValueError, match="compressed codes.*keys="):
        compressed.fit_router(train)
    with pytest.raises(ValueError, match="row i the key with id i"):
        compressed.fit_router(train, keys=keys[:-1])
    compressed.fit_router(train, keys=keys, num_pieces=16 * NLIST)
    compressed.nprobe = 1
    _, routed = compressed.search(test, 1)
    # The router sends more queries to the list that holds their best key than faiss does.
    _, best = ap.topk_dot(test, keys, 1)
    list_of_key = compressed.quantizer.search(keys, 1)[1][:, 0]
    right_list = list_of_key[best[:, 0]]
    faiss_first = compressed.quantizer.search(test, 1)[1][:, 0]
    assert (list_of_key[routed[:, 0]] == right_list).mean() > (faiss_first == right_list).mean()
    path = tmp_path / "compressed.amips"
    compressed.save(path)
    for copy_ in (AmortizedIVF.load(path), pickle.loads(pickle.dumps(compressed))):
        assert type(copy_) is type(compressed) and isinstance(copy_.router, MaxAffineRouter)
        np.testing.assert_array_equal(copy_.search(test, 5)[1], compressed.search(test, 5)[1])
    compressed.router = None


def test_from_faiss_and_from_factory_refuse_what_they_cannot_wrap():
    with pytest.raises(TypeError, match="inner-product faiss IVF index"):
        AmortizedIVF.from_factory(D, "HNSW16")
    with pytest.raises(TypeError, match="inner-product faiss IVF index"):
        AmortizedIVF.from_faiss(faiss.index_factory(D, "IVF4,PQ4x4", faiss.METRIC_L2))
    with pytest.raises(ValueError, match="faiss cannot build 'IVF4,Nonsense'"):
        AmortizedIVF.from_factory(D, "IVF4,Nonsense")


def test_calibrate_measures_recall_per_nprobe_and_target_recall_uses_it(data, tmp_path):
    keys, train, test = data
    index = build(keys)
    index.fit_router(train[:1500], num_pieces=2 * NLIST)
    held_out = train[1500:]
    with pytest.raises(ValueError, match="needs a calibration"):
        index.search(test, 10, target_recall=0.9)
    curve = index.calibrate(held_out, 10)
    assert curve.shape == (NLIST,) and curve[-1] == 1.0 and (np.diff(curve) >= 0).all()
    first_lists = index.probed_lists(held_out, params=faiss.SearchParametersIVF(nprobe=NLIST))
    found_at = [
        [
            np.flatnonzero(row == ivf_list)[0]
            for ivf_list in index.quantizer.assign(keys[t], 1)[:, 0]
        ]
        for row, t in zip(first_lists, ap.topk_dot(held_out, keys, 10)[1])
    ]
    np.testing.assert_allclose(curve, [np.mean(np.less(found_at, n)) for n in range(1, NLIST + 1)])
    spread = []
    for target in (0.6, 0.9, 0.99):
        for queries, slack in ((held_out, 0.0), (test, 0.03)):
            D, ids = index.search(queries, 10, target_recall=target)
            stats = index.last_search_stats
            nprobe = stats["nprobe_per_query"]
            assert stats["nprobe"] == nprobe.mean() and (nprobe >= FIRST_LISTS).all()
            # every query's answer is the exact top-10 of its own first nprobe lists
            everywhere = index.probed_lists(queries, params=faiss.SearchParametersIVF(nprobe=NLIST))
            own = np.where(np.arange(NLIST) < nprobe[:, None], everywhere, -1)
            D_own, ids_own = index.search_lists(queries, 10, own)
            np.testing.assert_array_equal(ids, ids_own)
            np.testing.assert_allclose(D, D_own, rtol=1e-6)
            truth = ap.topk_dot(queries, keys, 10)[1]
            assert recall_per_query(ids, truth).mean() >= target - slack
        spread.append(nprobe.std())
    assert max(spread) > 0  # queries got different efforts
    with pytest.raises(ValueError, match="calibrated for k = 10, not 5"):
        index.search(test, 5, target_recall=0.9)
    with pytest.raises(ValueError, match="must lie in"):
        index.search(test, 10, target_recall=1.5)
    index.save(tmp_path / "calibrated.amips")
    loaded = AmortizedIVF.load(tmp_path / "calibrated.amips")
    for a, b in zip(
        loaded.search(test, 10, target_recall=0.9), index.search(test, 10, target_recall=0.9)
    ):
        np.testing.assert_array_equal(a, b)
    for each in (index, loaded):  # the router found its training queries' answers more often
        with pytest.raises(ValueError, match="100% of the calibration queries are queries fit_"):
            each.calibrate(train[:300], 10)
    short = index.calibrate(held_out, 10, max_nprobe=6)
    assert len(short) == 6
    with pytest.raises(ValueError, match="above the calibrated maximum"):
        index.search(test, 10, target_recall=min(1.0, short[-1] + 0.001))
    index.router = None  # another choice of lists: the calibration no longer holds
    with pytest.raises(ValueError, match="needs a calibration"):
        index.search(test, 10, target_recall=0.9)
    index.calibrate(train[:300], 10)  # faiss's own choice learned nothing from them


def test_a_graph_router_is_calibrated_at_two_beams_and_searched_at_the_chosen_one(data, tmp_path):
    keys, train, test = data
    index = build(keys)
    index.fit_router(train[:1500], num_pieces=2 * NLIST)
    index.router = PieceGraphRouter.build(index.router.pieces, index.router.offsets, ef=8)
    index.calibrate(train[1500:], 10)
    assert {beam for beam, _ in index._effort} == {8, 4}
    truth = ap.topk_dot(test, keys, 10)[1]
    tables = index._effort
    for beam in (8, 4):
        # the calibration at this beam alone: its searches walk the graph with it
        index._effort = {s: t for s, t in tables.items() if s[0] == beam}
        walked = pickle.loads(pickle.dumps(index))
        walked.router = index.router.with_ef(beam)
        for target in (0.8, 0.95):
            D, ids = index.search(test, 10, target_recall=target)
            stats = index.last_search_stats
            assert stats["router_ef"] == beam
            # every query's answer is the exact top-10 of its first nprobe lists at that beam
            everywhere = walked.probed_lists(test, params=faiss.SearchParametersIVF(nprobe=NLIST))
            own = np.where(np.arange(NLIST) < stats["nprobe_per_query"][:, None], everywhere, -1)
            np.testing.assert_array_equal(ids, walked.search_lists(test, 10, own)[1])
            assert recall_per_query(ids, truth).mean() >= target - 0.03
    index._effort = tables
    index.search(test, 10, target_recall=0.9)
    chosen = index.last_search_stats["router_ef"]
    index.save(tmp_path / "beams.amips")
    loaded = AmortizedIVF.load(tmp_path / "beams.amips")
    np.testing.assert_array_equal(
        loaded.search(test, 10, target_recall=0.9)[1], index.search(test, 10, target_recall=0.9)[1]
    )
    assert loaded.last_search_stats["router_ef"] == chosen

    def with_beams(beams):
        def rewrite(blob):
            meta = json.loads(blob)
            meta["calibration"]["beams"] = beams
            return json.dumps(meta).encode()

        return rewrite

    meta = json.loads(zipfile.ZipFile(tmp_path / "beams.amips").read("meta.json"))
    assert meta["calibration"]["beams"] == [8, 4]
    for bad, message in (([0, 4], "beam must be positive"), ([8], "one beam and one k_factor")):
        index.save(tmp_path / "bad.amips")
        rewrite_member(tmp_path / "bad.amips", "meta.json", with_beams(bad))
        with pytest.raises(ValueError, match=message):
            AmortizedIVF.load(tmp_path / "bad.amips")


def test_a_file_with_one_recall_curve_for_all_queries_still_loads(data, tmp_path):
    keys, train, test = data
    index = build(keys)
    index.save(tmp_path / "index.amips")

    def one_curve(blob):
        meta = json.loads(blob)
        meta["calibration"] = {"k": 10, "recall": [0.5, 0.8, 0.95, 0.99]}
        return json.dumps(meta).encode()

    rewrite_member(tmp_path / "index.amips", "meta.json", one_curve)
    loaded = AmortizedIVF.load(tmp_path / "index.amips")
    D, ids = loaded.search(test, 10, target_recall=0.9)  # the curve's nprobe 3, for every query
    assert loaded.last_search_stats["nprobe_per_query"].tolist() == [3] * len(test)
    D3, ids3 = index.search(test, 10, params=faiss.SearchParametersIVF(nprobe=3))
    np.testing.assert_array_equal(ids, ids3)
    with pytest.raises(ValueError, match="above the calibrated maximum 0.99"):
        loaded.search(test, 10, target_recall=0.995)

    def too_deep(blob):
        meta = json.loads(blob)
        meta["calibration"] = {"k": 10, "recall": [1.0] * (NLIST + 1)}
        return json.dumps(meta).encode()

    rewrite_member(tmp_path / "index.amips", "meta.json", too_deep)
    with pytest.raises(ValueError, match="reaches nprobe 25 of 24"):
        AmortizedIVF.load(tmp_path / "index.amips")


def test_calibration_does_not_depend_on_the_ids_keys_were_added_with(data):
    keys, train, _ = data
    plain, renumbered = build(keys), AmortizedIVF(faiss.IndexFlatIP(D), D, NLIST)
    renumbered.train(keys)
    renumbered.add_with_ids(keys, 7 * np.arange(len(keys)) + 3)
    router = MaxAffineRouter.fit(*plain.grouped_keys()[:2], train[:1500], 2 * NLIST)
    plain.router = renumbered.router = router
    np.testing.assert_array_equal(
        renumbered.calibrate(train[1500:], 10), plain.calibrate(train[1500:], 10)
    )
