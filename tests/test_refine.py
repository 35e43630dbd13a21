"""Compressed lists re-ranked from the raw keys (``",RFlat"``, or float16 ones with
``",Refine(SQfp16)"``): faiss's IndexRefineFlat / IndexRefine results with the learned choice of
lists, target_recall choosing the re-ranking depth, and a declared recall that holds over
compressed lists."""

import faiss
import numpy as np
import pytest

import amips_plugins as ap
from amips_plugins.effort import recall_per_query
from amips_plugins.ivf.calibration import K_FACTORS
from conftest import clustered

D, NLIST, N = 32, 40, 12_000
FACTORY = f"IVF{NLIST},PQ{D}x4fs,RFlat"
FACTORY16 = f"IVF{NLIST},PQ{D}x4fs,Refine(SQfp16)"


@pytest.fixture(scope="module")
def data():
    """Clustered keys with varied norms; queries drawn like them (train, calibration, test)."""
    return clustered(D, (N, 6000, 2000, 1000), seed=1)


@pytest.fixture(scope="module")
def refined(data):
    """The recommended construction: fast-scan codes re-ranked, router fitted, calibrated."""
    keys, train, calibration, _ = data
    index = ap.AmortizedIVF.from_factory(D, FACTORY)
    index.train(keys)
    index.add(keys)
    index.fit_router(train)  # the raw keys are the index's own: no keys= needed
    index.calibrate(calibration, 10)
    return index


def test_without_a_learned_part_the_results_are_faiss_index_refine_flat_s(data):
    keys, _, _, test = data
    ours = ap.AmortizedIVF.from_factory(D, FACTORY)
    assert ours.refines and ours.k_factor == 1.0 and isinstance(ours, faiss.IndexIVFPQFastScan)
    ours.train(keys)
    ours.add(keys)
    base = faiss.deserialize_index(faiss.serialize_index(ours))  # the same codes
    flat = faiss.IndexFlatIP(D)
    flat.add(keys)
    theirs = faiss.IndexRefine(base, flat)
    for k_factor, nprobe in ((1, 1), (4, 3), (16, 8)):
        ours.k_factor, theirs.k_factor = k_factor, k_factor
        ours.nprobe = faiss.downcast_index(theirs.base_index).nprobe = nprobe
        D_ours, I_ours = ours.search(test, 10)
        D_theirs, I_theirs = theirs.search(test, 10)
        np.testing.assert_allclose(D_ours, D_theirs, rtol=1e-5, atol=1e-5)
        agree = (I_ours == I_theirs).mean()
        assert agree > 0.999  # only ties and the last bits of a score can swap two keys
        assert ours.last_search_stats["reranked"] == 10 * k_factor


def faiss_refine(factory, keys, k_factor, nprobe):
    """faiss's own refine index of ``factory``, holding ``keys``."""
    theirs = faiss.index_factory(D, factory, faiss.METRIC_INNER_PRODUCT)
    theirs.train(keys)
    theirs.add(keys)
    theirs.k_factor = k_factor
    faiss.downcast_index(theirs.base_index).nprobe = nprobe
    return theirs


def test_a_refine_index_of_faiss_s_is_adopted_with_its_keys_and_k_factor(data):
    keys, _, _, test = data
    theirs = faiss_refine(FACTORY, keys, k_factor=8, nprobe=4)
    ours = ap.AmortizedIVF.from_faiss(theirs)
    assert ours.k_factor == 8 and ours.ntotal == N
    np.testing.assert_array_equal(ours.raw_keys(), keys)
    assert (ours.search(test, 10)[1] == theirs.search(test, 10)[1]).mean() > 0.999


def test_target_recall_meets_the_target_choosing_nprobe_and_depth(refined, data):
    keys, _, calibration, test = data
    assert set(refined._effort) == {(None, f) for f in K_FACTORS}  # a router without a beam
    truth = ap.topk_dot(test, keys, 10)[1]
    reaching = {}  # target: the depths (k_factor) whose calibrated nprobes meet it
    for target in (0.9, 0.95, 0.99):
        # on the calibration queries within a few keys in 10,000: fast-scan's scores are
        # quantized, and which of two tied candidates a scan keeps at the re-ranking depth
        # depends on the lists it scans together
        for queries, slack in ((calibration, 0.0005), (test, 0.02)):
            _, ids = refined.search(queries, 10, target_recall=target)
            exact = ap.topk_dot(queries, keys, 10)[1] if queries is calibration else truth
            assert recall_per_query(ids, exact).mean() >= target - slack
        stats = refined.last_search_stats
        # the depth meeting the target at the least measured cost (the costs include the
        # measured time of re-ranking, so which depth that is depends on the machine)
        costs = {
            f: t.cost_for(target) for f, t in refined._effort.items() if t.max_recall >= target
        }
        assert stats["reranked"] == refined._depth(10, min(costs, key=costs.get)[1])
        for table in refined._effort.values():  # seconds per query, never less for more lists
            assert (table.cost > 0).all() and (np.diff(table.cost, axis=-1) >= 0).all()
        assert stats["nprobe"] == stats["nprobe_per_query"].mean()
        reaching[target] = {f for _, f in costs}
    assert min(reaching[0.9]) < min(reaching[0.99])  # deeper targets need a deeper re-ranking
    # the re-ranked scores are exact
    D_found, ids = refined.search(test, 10, target_recall=0.95)
    np.testing.assert_allclose(D_found, np.einsum("nd,nkd->nk", test, keys[ids]), rtol=1e-5)


def test_float16_raw_keys_re_rank_as_faiss_index_refine_over_sqfp16(data, tmp_path):
    keys, _, _, test = data
    theirs = faiss_refine(FACTORY16, keys, k_factor=4, nprobe=3)
    ours = ap.AmortizedIVF.from_faiss(theirs)
    assert ours.raw_key_dtype == np.float16 and ours.k_factor == 4 and ours.nprobe == 3
    kept = faiss.downcast_index(theirs.refine_index).reconstruct_n(0, N)  # faiss's rounding
    np.testing.assert_array_equal(ours.raw_keys(), kept)
    np.testing.assert_allclose(kept, keys, rtol=2**-10, atol=2**-24)
    D_ours, I_ours = ours.search(test, 10)
    D_theirs, I_theirs = theirs.search(test, 10)
    np.testing.assert_allclose(D_ours, D_theirs, rtol=1e-5, atol=1e-5)
    assert (I_ours == I_theirs).mean() > 0.999
    ours.save(tmp_path / "half.amips")
    loaded = ap.AmortizedIVF.load(tmp_path / "half.amips")
    assert loaded.raw_key_dtype == np.float16
    for a, b in zip(loaded.search(test, 10), (D_ours, I_ours)):
        np.testing.assert_array_equal(a, b)


def test_float16_raw_keys_keep_a_declared_recall_of_the_float32_keys(data):
    """The calibration's exact answers are those of the float16 keys; against the float32 keys'
    the recall stays within half a point of the target."""
    keys, train, calibration, _ = data
    index = ap.AmortizedIVF.from_factory(D, FACTORY16)
    index.train(keys)
    index.add(keys)
    index.fit_router(train)
    index.calibrate(calibration, 10)
    exact = ap.topk_dot(calibration, keys, 10)[1]
    for target in (0.9, 0.99):
        _, ids = index.search(calibration, 10, target_recall=target)
        assert recall_per_query(ids, exact).mean() >= target - 0.005


def test_keys_beyond_float16_s_range_are_refused_and_nothing_is_lost(data):
    keys, _, _, test = data
    index = ap.AmortizedIVF.from_factory(D, FACTORY16)
    index.train(keys)
    index.add(keys)
    before = index.search(test, 10)
    huge = keys[:3].copy()
    huge[1, 5] = 7e4
    with pytest.raises(ValueError, match="float16"):
        index.add(huge)
    assert index.ntotal == N and len(index.raw_keys()) == N
    for a, b in zip(index.search(test, 10), before):
        np.testing.assert_array_equal(a, b)


def test_a_compressed_index_without_re_ranking_is_calibrated_on_what_its_scan_finds(data):
    """Over coarse codes a key whose list is probed is often not returned: a calibration that
    counted the probed lists would promise recall the scan cannot give."""
    keys, train, calibration, test = data
    index = ap.AmortizedIVF.from_factory(D, f"IVF{NLIST},PQ8x4fs")
    index.train(keys)
    index.add(keys)
    index.fit_router(train, keys=keys)
    curve = index.calibrate(calibration, 10, keys=keys)
    assert np.nanmax(curve) < 0.9  # 4 bits per 4 dimensions: the scan itself misses keys
    with pytest.raises(ValueError, match="above the calibrated maximum"):
        index.search(test, 10, target_recall=0.9)
    target = round(float(np.nanmax(curve)) - 0.05, 2)
    _, ids = index.search(test, 10, target_recall=target)
    assert recall_per_query(ids, ap.topk_dot(test, keys, 10)[1]).mean() >= target - 0.02


def test_files_keep_the_raw_keys_the_depth_and_the_calibration(refined, data, tmp_path):
    _, _, _, test = data
    refined.k_factor = 3
    refined.save(tmp_path / "refined.amips")
    loaded = ap.AmortizedIVF.load(tmp_path / "refined.amips")
    assert loaded.refines and loaded.k_factor == 3
    np.testing.assert_array_equal(loaded.raw_keys(), refined.raw_keys())
    for target in (None, 0.95):
        for a, b in zip(
            loaded.search(test, 10, target_recall=target),
            refined.search(test, 10, target_recall=target),
        ):
            np.testing.assert_array_equal(a, b)


def test_ids_the_raw_keys_cannot_follow_are_refused_and_nothing_is_lost(data):
    keys, _, _, test = data
    index = ap.AmortizedIVF.from_factory(D, FACTORY)
    index.train(keys)
    index.add(keys[:5000])
    before = index.search(test, 10)
    with pytest.raises(ValueError, match="add_with_ids is not supported"):
        index.add_with_ids(keys[5000:6000], np.arange(9000, 10000))
    with pytest.raises(ValueError, match="remove_ids is not supported"):
        index.remove_ids(np.arange(10))
    with pytest.raises(ValueError, match="merge_from is not supported"):
        index.merge_from(ap.AmortizedIVF.from_factory(D, FACTORY))
    assert index.ntotal == 5000 and len(index.raw_keys()) == 5000
    for a, b in zip(index.search(test, 10), before):
        np.testing.assert_array_equal(a, b)
    index.add(keys[5000:])  # add keeps both in step
    np.testing.assert_array_equal(index.raw_keys(), keys)
    faiss.IndexIVFPQFastScan.add(index, keys[:10])  # from C++: no raw keys for these
    with pytest.raises(ValueError, match="added or removed from C"):
        index.search(test, 10)
    index.reset()
    assert index.ntotal == 0 and len(index.raw_keys()) == 0


@pytest.mark.parametrize("bad", [0.5, float("nan"), "4", True])
def test_k_factor_is_a_number_of_at_least_one(bad):
    index = ap.AmortizedIVF.from_factory(D, FACTORY)
    with pytest.raises((TypeError, ValueError), match="k_factor"):
        index.k_factor = bad
    assert index.k_factor == 1.0
    plain = ap.AmortizedIVF.from_factory(D, f"IVF{NLIST},PQ8x4fs")
    with pytest.raises(ValueError, match="re-ranks"):
        plain.k_factor = 4
