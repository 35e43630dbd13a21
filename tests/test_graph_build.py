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


def test_groups_choose_each_querys_ef_and_labels_name_what_is_found(data):
    keys, queries, _ = data
    graph = _core.GraphSearch(D, 12)
    graph.add(keys, 100, 7, 1)
    rng = np.random.default_rng(5)
    groups = rng.standard_normal((5, D)).astype(np.float32)
    group_ef = np.array([10, 20, 40, 80, 160], np.int32)
    labels = rng.permutation(10 * N)[:N].astype(np.int64)
    scores, found, computed = graph.search(
        queries, queries, 10, group_ef, 2, groups=groups, labels=labels
    )
    per_query = group_ef[np.argmax(queries @ groups.T, axis=1)]
    expected = graph.search(queries, queries, 10, per_query, 2)
    np.testing.assert_array_equal(found, labels[expected[1]])
    np.testing.assert_array_equal(scores, expected[0])
    assert computed == expected[2]
    # the count takes in the codes a walk scored and the exact scores of what it ranked: one
    # element is scored by its code at the entry, then exactly
    single = _core.GraphSearch(D, 4)
    single.add(keys[:1])
    assert single.search(queries[:3], queries[:3], 1, np.ones(1, np.int32))[2] == 3 * 2
    # one ef serves every query
    same = graph.search(queries, queries, 10, np.array([40], np.int32), 2)
    np.testing.assert_array_equal(same[1], walk(graph, queries, 40)[1])
    with pytest.raises(ValueError, match="one per group"):
        graph.search(queries, queries, 10, group_ef[:4], 2, groups=groups)
    with pytest.raises(ValueError, match="columns"):
        graph.search(queries, queries, 10, group_ef, 2, groups=groups[:, :5])
    with pytest.raises(ValueError, match="at least k"):
        graph.search(queries, queries, 20, group_ef, 2, groups=groups)
    with pytest.raises(ValueError, match="labels"):
        graph.search(queries, queries, 10, group_ef, 2, labels=labels[:-1])
    with pytest.raises(ValueError, match="no finite inner product"):
        nan = queries[:2].copy()
        nan[1, 0] = np.nan
        graph.search(nan, nan, 10, group_ef, 2, groups=groups)
    none = np.empty((0, D), np.float32)
    assert graph.search(none, none, 10, np.empty(0, np.int32))[1].shape == (0, 10)
    assert graph.search(none, none, 10, group_ef, groups=groups)[1].shape == (0, 10)
    # rows short of k keep -1, not a label
    few = graph.search(queries, queries, 10, group_ef, 2, lambda e: e < 3, groups, labels)[1]
    np.testing.assert_array_equal(few[:, 3:], -1)
    assert np.isin(few, np.append(labels[:3], -1)).all() and (few[:, 0] >= 0).all()


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


def link_counts(graph):
    return graph.arrays()["links0"][:, 0] & 0xFFFF


def test_filled_lists_use_every_link_their_width_allows_and_find_more(data):
    keys, queries, truth = data
    plain, filled = _core.GraphSearch(D, 8), _core.GraphSearch(D, 8)
    plain.add(keys, 64, 1, 1)
    filled.add(keys, 64, 1, 1, fill_lists=True)
    assert link_counts(plain).mean() < 12  # the heuristic leaves a quarter of the 16 unused
    assert (link_counts(filled) == 16).all()
    upper = filled.arrays()
    assert upper["upper"].size and upper["upper"].reshape(-1, 9)[:, 0].max() == 8
    for ef in (10, 20):
        assert recall(walk(filled, queries, ef)[1], truth) > recall(
            walk(plain, queries, ef)[1], truth
        ), ef


def heuristic_choice(values, base, links):
    """hnswlib's heuristic over ``links`` of ``base``, on the values the codes stand for."""
    ranked = sorted(links, key=lambda c: -values[c] @ values[base])
    kept = []
    for c in ranked:
        if all(values[c] @ values[o] <= values[c] @ values[base] for o in kept):
            kept.append(c)
    return kept, ranked


def links_of(graph, e):
    row = graph.arrays()["links0"][e]
    return row[1 : 1 + (row[0] & 0xFFFF)].tolist()


def test_links_go_into_room_then_in_place_of_those_that_filled_a_list(data):
    keys = data[0][:600]
    graph = _core.GraphSearch(D, 4, keep_keys=False)  # 8 links per element on level 0; codes
    graph.add(keys, 40, 1, 1, fill_lists=True)
    arrays = graph.arrays()
    values = (arrays["code_low"] + arrays["codes"] * arrays["code_scale"]).astype(np.float64)
    source = next(
        e for e in range(len(keys)) if len(heuristic_choice(values, e, links_of(graph, e))[0]) <= 5
    )
    before = links_of(graph, source)
    kept, ranked = heuristic_choice(values, source, before)
    absent = [t for t in range(len(keys)) if t != source and t not in before][:3]
    targets = [absent[0], absent[0], source, *absent[1:]]  # a repeat, a self-link
    added = graph.link(np.full(len(targets), source, np.int64), np.array(targets))
    after = links_of(graph, source)
    assert added == 3 and len(after) == 8
    # the heuristic's own choice stays; the worst of the links that only filled the list leave
    filler = [c for c in ranked if c not in kept]
    assert set(after) == set(kept) | set(filler[:-3]) | set(absent)
    others = [links_of(graph, e) for e in range(len(keys)) if e != source]
    assert graph.link(np.array([source]), np.array([absent[0]])) == 0  # present already

    roomy = _core.GraphSearch(D, 4)
    roomy.add(keys, 40, 1, 1)
    spare = next(e for e in range(len(keys)) if len(links_of(roomy, e)) < 8)
    new = next(t for t in range(len(keys)) if t != spare and t not in links_of(roomy, spare))
    assert roomy.link(np.array([spare]), np.array([new])) == 1
    assert new in links_of(roomy, spare)
    with pytest.raises(ValueError, match="not in the graph"):
        graph.link(np.array([source, 600]), np.array([absent[0], 3]))
    with pytest.raises(ValueError, match="one length"):
        graph.link(np.array([1, 2]), np.array([2]))
    assert links_of(graph, source) == after  # a refused call changes nothing
    assert [links_of(graph, e) for e in range(len(keys)) if e != source] == others


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
