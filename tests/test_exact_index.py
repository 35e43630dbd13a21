import copy
import pickle
import threading

import faiss
import numpy as np
import pytest

import amips_plugins as ap
from conftest import assert_topk_matches, beside_writer, reference_topk


def test_swap_in_for_faiss_flat_ip():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((3000, 24)).astype(np.float32)
    xq = rng.standard_normal((40, 24)).astype(np.float32)

    def run(index):  # code written for faiss.IndexFlatIP, unchanged
        index.add(xb[:1000])
        index.add(xb[1000:])
        return index.ntotal, index.d, index.is_trained, index.search(xq, 10)

    ours, theirs = run(ap.ExactIndex(24)), run(faiss.IndexFlatIP(24))
    assert ours[:3] == theirs[:3]
    np.testing.assert_allclose(ours[3][0], theirs[3][0], rtol=1e-5, atol=1e-5)
    assert (ours[3][1] == theirs[3][1]).mean() > 0.99  # float rounding may swap near-ties


def test_batches_equal_one_add_and_reset():
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((1000, 10)).astype(np.float32)
    index = ap.ExactIndex(10)
    for chunk in np.array_split(xb, 7):
        index.add(chunk)
    assert index.ntotal == 1000
    np.testing.assert_array_equal(index.keys, xb)
    assert_topk_matches(*index.search(xb[:20], 4), *reference_topk(xb[:20], xb, 4))
    index.reset()
    assert index.ntotal == 0
    scores, ids = index.search(xb[:2], 3)
    assert (ids == -1).all() and np.isneginf(scores).all()


def test_keys_is_a_copy():
    index = ap.ExactIndex(3)
    index.add(np.ones((2, 3)))
    keys = index.keys
    keys[0, 0] = 5
    np.testing.assert_array_equal(index.keys, np.ones((2, 3)))


@pytest.mark.parametrize("threads", [1, 2])
def test_packed_index_matches_topk_dot_bit_for_bit(simd, threads):
    # Odd batch sizes leave partly filled panels that later adds complete.
    rng = np.random.default_rng(5)
    xb = rng.standard_normal((3001, 21)).astype(np.float32)
    queries = rng.standard_normal((9, 21)).astype(np.float32)
    index = ap.ExactIndex(21)
    for chunk in np.split(xb, [5, 6, 40, 1000]):
        index.add(chunk)
    got = index.search(queries, 12, num_threads=threads)
    expected = ap.topk_dot(queries, xb, 12, num_threads=threads)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_search_while_adding():
    rng = np.random.default_rng(2)
    first = rng.standard_normal((2000, 16)).astype(np.float32)
    index = ap.ExactIndex(16)
    index.add(first)
    expected = index.search(first[:10], 3)
    errors = []

    def add_more():
        for _ in range(20):
            index.add(-np.abs(rng.standard_normal((500, 16))).astype(np.float32) * 1e-3)

    def search():
        for _ in range(20):
            scores, ids = index.search(first[:10], 3)
            # Added keys are tiny, so the best three never change.
            if not (np.array_equal(ids, expected[1]) and np.array_equal(scores, expected[0])):
                errors.append((scores, ids))

    threads = [threading.Thread(target=add_more)] + [
        threading.Thread(target=search) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert index.ntotal == 2000 + 20 * 500


# --- drop-in for faiss.IndexFlatIP ---------------------------------------------------------------
def _keys(n=500, d=12, seed=7):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_faiss_functions_take_it_as_the_flat_index_it_is(tmp_path):
    xb = _keys()
    index = ap.ExactIndex(12)
    index.add(xb)
    assert isinstance(index, faiss.IndexFlatIP)
    expected = index.search(xb[:5], 4)
    path = str(tmp_path / "flat.faiss")
    faiss.write_index(index, path)
    for plain in (faiss.read_index(path), faiss.clone_index(index)):
        assert plain.ntotal == 500
        np.testing.assert_array_equal(plain.search(xb[:5], 4)[1], expected[1])
        back = ap.ExactIndex.from_faiss(plain)
        assert isinstance(back, ap.ExactIndex)
        np.testing.assert_array_equal(back.search(xb[:5], 4)[1], expected[1])
    np.testing.assert_array_equal(index.reconstruct(17), xb[17])
    np.testing.assert_array_equal(index.reconstruct_n(3, 4), xb[3:7])
    with pytest.raises(TypeError, match="IndexFlatIP"):
        ap.ExactIndex.from_faiss(faiss.IndexFlatL2(12))


def test_keys_added_through_a_faiss_container_are_searched_here_too():
    xb = _keys()
    index = ap.ExactIndex(12)
    with_ids = faiss.IndexIDMap(index)
    for start, stop in ((0, 100), (100, 500)):  # C++ adds, behind this object's back
        with_ids.add_with_ids(xb[start:stop], np.arange(1000 + start, 1000 + stop))
        D, I = index.search(xb[:3], 5)
        assert_topk_matches(D, I, *reference_topk(xb[:3], xb[:stop], 5))
    _, mapped = with_ids.search(xb[:3], 5)
    np.testing.assert_array_equal(mapped, 1000 + I)


def test_keys_replaced_through_a_faiss_container_by_as_many_are_found():
    """A reset and an add of as many other keys from C++: the count is unchanged, the rows are
    not, and the packed copy is made again."""
    xb = _keys()
    index = ap.ExactIndex(12)
    with_ids = faiss.IndexIDMap(index)
    with_ids.add_with_ids(xb[:200], np.arange(200))
    index.search(xb[:3], 5)  # packed
    with_ids.reset()
    with_ids.add_with_ids(xb[200:400], np.arange(200))
    D, I = index.search(xb[:3], 5)
    assert_topk_matches(D, I, *reference_topk(xb[:3], xb[200:400], 5))


def test_a_removal_and_an_add_through_a_faiss_container_are_found():
    xb = _keys()
    index = ap.ExactIndex(12)
    with_ids = faiss.IndexIDMap(index)
    with_ids.add_with_ids(xb[:300], np.arange(300))
    index.search(xb[:3], 5)  # packed
    for new, removed in enumerate((7, 299, 0), start=300):  # one key out, another in
        with_ids.remove_ids(np.array([removed], np.int64))
        with_ids.add_with_ids(xb[new : new + 1], np.array([1000 + removed]))
        rows = index.keys
        queries = np.concatenate([xb[removed : removed + 1], xb[new : new + 1]])
        D, I = index.search(queries, 5)
        assert_topk_matches(D, I, *reference_topk(queries, rows, 5))
        _, mapped = with_ids.search(queries, 1)
        assert removed not in mapped


def test_remove_ids_and_selectors_follow_faiss():
    xb = _keys()
    ours, theirs = ap.ExactIndex(12), faiss.IndexFlatIP(12)
    for index in (ours, theirs):
        index.add(xb)
        assert index.remove_ids(np.arange(0, 500, 3)) == 167
    kept = np.delete(xb, np.arange(0, 500, 3), axis=0)
    assert_topk_matches(*ours.search(xb[:4], 6), *reference_topk(xb[:4], kept, 6))
    params = faiss.SearchParameters(sel=faiss.IDSelectorRange(10, 60))
    D, I = ours.search(xb[:4], 6, params=params)
    D_ref, I_ref = theirs.search(xb[:4], 6, params=params)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_array_equal(D, D_ref)
    D, I = ours.search(xb[:1], 60, params=params)  # 50 selected keys: padded like ours
    assert (I[0, 50:] == -1).all() and np.isneginf(D[0, 50:]).all()
    with pytest.raises(TypeError, match="SearchParameters"):
        ours.search(xb[:1], 2, params={"sel": None})


def test_results_into_the_callers_arrays_and_errors_faiss_code_catches():
    xb = _keys()
    index = ap.ExactIndex(12)
    index.add(xb)
    D, I = np.empty((2, 3), np.float32), np.empty((2, 3), np.int64)
    got = index.search(xb[:2], 3, D=D, I=I)
    assert got[0] is D and got[1] is I
    assert_topk_matches(D, I, *reference_topk(xb[:2], xb, 3))
    with pytest.raises(ValueError, match="I must be a int64 array of shape"):
        index.search(xb[:2], 3, I=np.empty((2, 3), np.int32))
    with pytest.raises(AssertionError):  # faiss raises AssertionError for a wrong dimension
        index.add(xb[:, :5])
    with pytest.raises(RuntimeError):  # as faiss: a flat index keeps ids ntotal .. ntotal + n
        index.add_with_ids(xb[:2], np.arange(2))
    with pytest.raises(AttributeError):  # a misspelt attribute is refused, as faiss refuses it
        index.ntotl = 3
    assert index.ntotal == 500


def test_pickle_and_deepcopy_keep_the_class_and_the_keys():
    xb = _keys(n=130)
    index = ap.ExactIndex(12)
    index.add(xb)
    for copy_ in (pickle.loads(pickle.dumps(index)), copy.deepcopy(index)):
        assert type(copy_) is ap.ExactIndex and copy_.ntotal == 130
        np.testing.assert_array_equal(copy_.keys, xb)
        copy_.add(xb[:1])
    assert index.ntotal == 130


def test_search_beside_removals_and_resets_sees_whole_states():
    xb = _keys(n=640, d=8)
    index = ap.ExactIndex(8)
    removed = np.arange(0, 640, 2)
    full, half = faiss.IndexFlatIP(8), faiss.IndexFlatIP(8)
    full.add(xb)
    half.add(xb)
    half.remove_ids(removed)
    # The three states the writer passes through: empty, all keys, every other key removed.
    states = [np.full((4, 3), -1), full.search(xb[:4], 3)[1], half.search(xb[:4], 3)[1]]

    def search():
        ids = index.search(xb[:4], 3)[1]
        assert any(np.array_equal(ids, state) for state in states), ids

    def writer():
        for _ in range(15):
            index.reset()
            index.add(xb)
            index.remove_ids(removed)

    calls = beside_writer([search, search], writer)
    assert min(calls) > 0
