"""The HNSW graph the core builds (``_core.GraphSearch.add``): as good as hnswlib's at the same
settings, reproducible on one thread, kept whole through its arrays, deletions honoured."""

import hnswlib
import numpy as np
import pytest

from amips_plugins import _core
from amips_plugins._hnsw_file import graph_arrays, insertion_order
from amips_plugins.exact import topk_dot

N, D = 4000, 24


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    # norms that vary, as in the MIPS data sets, inserted longest first
    keys = (rng.standard_normal((N, D)) * rng.lognormal(0, 0.4, (N, 1))).astype(np.float32)
    keys = keys[insertion_order(keys)]
    queries = rng.standard_normal((300, D)).astype(np.float32)
    return keys, queries, topk_dot(queries, keys, 10)[1]


def recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


def walk(graph, queries, ef, k=10):
    return graph.search(queries, queries, k, np.full(len(queries), ef, np.int32), 1)


def test_the_graph_finds_what_hnswlibs_graph_finds(data):
    keys, queries, truth = data
    ours = _core.GraphSearch(D, 12)
    ours.add(keys, 100, 7, 2)
    index = hnswlib.Index(space="ip", dim=D)
    index.init_index(N, M=12, ef_construction=100, random_seed=7)
    index.add_items(keys, num_threads=2)
    arrays, labels = graph_arrays(index)
    theirs = _core.GraphSearch(**arrays)
    for ef in (10, 40):
        mine = recall(walk(ours, queries, ef)[1], truth)
        other = recall(labels[walk(theirs, queries, ef)[1]], truth)
        assert mine >= other - 0.02, (ef, mine, other)
    assert recall(walk(ours, queries, 40)[1], truth) > 0.9
    # a beam as wide as the graph finds every element it can reach: by inner product, short keys
    # lose their in-links in either graph (about 11% here), in ours no more often
    reached = [(walk(g, queries[:1], N, k=N)[1] >= 0).sum() for g in (ours, theirs)]
    assert reached[0] >= reached[1] - N // 100, reached


@pytest.mark.parametrize("keep_keys", [True, False])
def test_one_thread_builds_the_same_graph_and_its_arrays_copy_it_whole(data, keep_keys):
    keys, queries, truth = data
    graphs = []
    for _ in range(2):
        graph = _core.GraphSearch(D, 8, keep_keys=keep_keys)
        graph.add(keys[:3000], 64, 1, 1)
        graph.add(keys[3000:], 64, 1, 1)
        graphs.append(graph)
    first, second = (g.arrays() for g in graphs)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    if keep_keys:
        np.testing.assert_array_equal(first["keys"], keys)
    else:  # codes only: what a walk finds is ranked by the values they stand for
        assert "keys" not in first and first["codes"].shape == (N, D)
        values = first["code_low"] + first["codes"] * first["code_scale"]
        assert np.abs(values - keys).max() <= first["code_scale"].max() / 2 + 1e-5
        assert recall(walk(graphs[0], queries, 40)[1], truth) > 0.85
    copy = _core.GraphSearch(**first)
    for a, b in zip(walk(copy, queries, 30), walk(graphs[0], queries, 30)):
        np.testing.assert_array_equal(a, b)
    # links within bounds: M on upper levels, 2 M on level 0
    assert (first["links0"][:, 0] & 0xFFFF).max() <= 16 and first["links0"].shape[1] == 17


@pytest.mark.parametrize("keep_keys", [True, False])
def test_keys_beyond_the_codes_range_are_found_and_deleted_ones_never(data, keep_keys):
    keys, queries, _ = data
    graph = _core.GraphSearch(D, 8, keep_keys=keep_keys)
    graph.add(keys[:2000], 64, 1, 2)
    rng = np.random.default_rng(0)
    strong = (rng.standard_normal((5, D)) * 30).astype(np.float32)  # far outside the first keys
    graph.add(strong, 64, 1, 2)
    assert graph.size == 2005
    found = walk(graph, strong, 20, k=1)[1][:, 0]
    np.testing.assert_array_equal(found, np.arange(2000, 2005))
    graph.mark_deleted(np.arange(2000, 2005))
    found = walk(graph, strong, 20, k=5)[1]
    assert ((found >= 0) & (found < 2000)).all()
    graph.unmark_deleted(np.arange(2002, 2005))
    assert sorted(walk(graph, strong[2:], 20, k=1)[1][:, 0]) == [2002, 2003, 2004]


def test_updated_elements_are_found_at_their_new_keys_and_the_rest_as_before(data):
    keys, queries, truth = data
    graph = _core.GraphSearch(D, 12)
    graph.reserve(N)
    graph.add(keys, 100, 7, 1)
    before = recall(walk(graph, queries, 40)[1], truth)
    rng = np.random.default_rng(1)
    moved = rng.choice(N, 400, replace=False).astype(np.int64)
    # new keys beyond the codes' ranges as well as inside them
    new = (rng.standard_normal((400, D)) * rng.lognormal(0, 0.6, (400, 1))).astype(np.float32)
    graph.update(moved, new, 100)
    np.testing.assert_array_equal(graph.keys(moved), new)
    changed = keys.copy()
    changed[moved] = new
    after = recall(walk(graph, queries, 40)[1], topk_dot(queries, changed, 10)[1])
    assert after >= before - 0.02, (before, after)
    # searched with the new keys themselves, the graph finds their exact best matches
    found = walk(graph, new, 40, k=1)[1][:, 0]
    assert (found == topk_dot(new, changed, 1)[1][:, 0]).mean() > 0.97


def test_a_filter_keeps_what_it_accepts_and_its_errors_propagate(data):
    keys, queries, _ = data
    graph = _core.GraphSearch(D, 12)
    graph.add(keys, 100, 7, 1)
    allowed = np.arange(N) % 3 == 0
    efs = np.full(len(queries), 80, np.int32)
    scores, found, _ = graph.search(queries, queries, 10, efs, 2, filter=lambda e: allowed[e])
    assert (found >= 0).all() and allowed[found].all()
    truth = np.flatnonzero(allowed)[topk_dot(queries, keys[allowed], 10)[1]]
    assert recall(found, truth) > 0.9
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, keys[found]), rtol=1e-5)

    def broken(e):
        raise KeyError(e)

    with pytest.raises(KeyError):
        graph.search(queries, queries, 10, efs, 2, filter=broken)


def test_elements_inserted_side_by_side_keep_their_in_links():
    # Near duplicates on more threads than cores: an element another insertion reached before
    # its own links were written used to end with no in-link (8 of 10,000 here).
    rng = np.random.default_rng(1)
    keys = rng.random((10_000, 16)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    graph = _core.GraphSearch(16, 16)
    graph.add(keys, 100, 100, 6)
    links = graph.arrays()["links0"]
    linked = np.zeros(len(keys), bool)
    for row in links:
        linked[row[1 : 1 + (row[0] & 0xFFFF)]] = True
    assert linked.sum() >= len(keys) - 1  # the entry point may have none
    found = walk(graph, keys, 10, k=1)[1][:, 0]
    assert (found == np.arange(len(keys))).mean() >= 0.9995


def test_links_are_added_where_a_list_has_room_and_lacks_them():
    graph = _core.GraphSearch(4, 2)  # 4 links per element on level 0
    graph.add(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))

    def links(e):
        row = graph.arrays()["links0"][e]
        return set(row[1 : 1 + (row[0] & 0xFFFF)].tolist())

    before = [links(e) for e in range(8)]
    source = min(range(8), key=lambda e: len(before[e]))
    assert len(before[source]) < 4  # room to add to
    absent = [t for t in range(8) if t != source and t not in before[source]]
    sources = np.full(len(absent) + 2, source, np.int64)
    targets = np.array([absent[0], absent[0], source, *absent[1:]])  # a repeat, a self-link
    added = graph.link(sources, targets)
    assert added == min(len(absent), 4 - len(before[source])) > 0  # up to the list's width, 4
    assert links(source) == before[source] | set(absent[:added])
    assert [links(e) for e in range(8) if e != source] == before[:source] + before[source + 1 :]
    after = [links(e) for e in range(8)]
    roomy = next(e for e in range(8) if len(after[e]) < 4)
    new = next(t for t in range(8) if t != roomy and t not in after[roomy])
    with pytest.raises(ValueError, match="not in the graph"):
        graph.link(np.array([roomy, 8]), np.array([new, 3]))  # the first pair alone would do
    with pytest.raises(ValueError, match="one length"):
        graph.link(np.array([1, 2]), np.array([2]))
    assert [links(e) for e in range(8)] == after  # a refused call changes nothing


def test_bad_input_is_refused():
    graph = _core.GraphSearch(4, 4)
    with pytest.raises(ValueError, match="number of elements"):
        graph.search(
            np.ones((1, 4), np.float32), np.ones((1, 4), np.float32), 1, np.ones(1, np.int32)
        )
    with pytest.raises(ValueError, match="4 columns"):
        graph.add(np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="finite"):
        graph.add(np.array([[1, 2, np.nan, 4]], np.float32))
    with pytest.raises(ValueError, match="empty"):
        graph.arrays()
    with pytest.raises(ValueError, match="max_m"):
        _core.GraphSearch(4, 1)
    graph.add(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="not in the graph"):
        graph.mark_deleted(np.array([4]))
    with pytest.raises(ValueError, match="not in the graph"):
        graph.update(np.array([0, 4]), np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="one row of 4"):
        graph.update(np.array([0]), np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="codes only"):
        codes_only = _core.GraphSearch(4, 4, keep_keys=False)
        codes_only.add(np.eye(4, dtype=np.float32))
        codes_only.keys(np.array([0]))
    assert graph.size == 4
