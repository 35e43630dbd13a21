import threading

import faiss
import numpy as np
import pytest

import amips_plugins as ap
from conftest import assert_topk_matches, reference_topk


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
