import json
import pickle
import zipfile

import hnswlib
import numpy as np
import pytest

import amips_plugins as ap
from amips_plugins.hnsw import AmortizedHNSW, HNSWError
from conftest import beside_writer, call_from_threads, rewrite_member

D = 10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, D)) * 2
    keys = centers[rng.integers(0, 20, 3000)] + rng.standard_normal((3000, D))
    keys = (keys * rng.lognormal(0, 0.4, (3000, 1))).astype(np.float32)
    queries = rng.standard_normal((1200, D)).astype(np.float32)
    return keys, queries[:1000], queries[1000:]


def build(keys, batches=1, **kw):
    index = AmortizedHNSW(space="ip", dim=D, **kw)
    index.init_index(max_elements=len(keys), M=16, ef_construction=100, random_seed=1)
    for part in np.array_split(np.arange(len(keys)), batches):
        index.add_items(keys[part], part, num_threads=1)
    index.set_ef(50)
    return index


def recall10(index, keys, queries):
    labels, _ = index.knn_query(queries, k=10)
    _, true = ap.topk_dot(queries, keys, 10)
    return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels.tolist(), true.tolist())])


def test_swap_in_for_hnswlib_ip(data):
    keys, _, test = data
    results = []
    for cls in (hnswlib.Index, AmortizedHNSW):  # the same code drives both
        p = cls(space="ip", dim=D)
        p.init_index(max_elements=len(keys), ef_construction=100, M=16)
        p.add_items(keys)
        p.set_ef(60)
        labels, distances = p.knn_query(test, k=5)
        assert (
            labels.dtype == np.uint64
            and distances.dtype == np.float32
            and labels.shape == (len(test), 5)
        )
        assert p.get_current_count() == len(keys) and p.get_max_elements() == len(keys)
        results.append(recall10(p, keys, test))
    assert results[1] >= results[0] - 0.02, results


@pytest.mark.parametrize("construction", ["ip", "xbox"])
def test_distances_are_one_minus_the_inner_product(data, construction):
    keys, _, test = data
    index = build(keys, construction=construction)
    labels, distances = index.knn_query(test, k=8)
    exact = np.einsum(
        "nd,nkd->nk", test.astype(np.float64), keys[labels.astype(np.int64)].astype(np.float64)
    )
    np.testing.assert_allclose(distances, 1 - exact, rtol=1e-5, atol=1e-5)
    assert (np.diff(distances, axis=1) >= 0).all()
    np.testing.assert_array_equal(
        index.get_items(labels[0].tolist()), keys[labels[0].astype(np.int64)]
    )


def test_xbox_max_norm_grows_across_batches(data):
    keys, _, _ = data
    index = AmortizedHNSW(space="ip", dim=D, construction="xbox")
    index.init_index(len(keys))
    seen = 0.0
    for part in np.array_split(keys, 4):
        index.add_items(part)
        seen = max(seen, float(np.linalg.norm(part, axis=1).max()))
        assert index.xbox.max_norm == pytest.approx(seen, rel=1e-6)
    stored = np.asarray(index.index.get_items(index.get_ids_list()))
    assert stored.shape[1] == D + 1
    assert (np.linalg.norm(stored, axis=1) <= seen * (1 + 1e-5)).all()


@pytest.mark.parametrize("construction", ["ip", "xbox"])
def test_recall_on_a_clustered_varied_norm_set(data, construction):
    keys, _, test = data
    bulk = recall10(build(keys, construction=construction), keys, test)
    streamed = recall10(build(keys, batches=10, construction=construction), keys, test)
    assert bulk > 0.9 and streamed > 0.9, (bulk, streamed)


def test_query_transform_search_rescored_with_q(data):
    pytest.importorskip("torch")
    keys, train, test = data
    index = build(keys)
    index.fit_query_transform(
        keys,
        train,
        ap.KeyNet(D, width=32, depth=2),
        steps=20,
        eval_every=20,
        progress=False,
        device="cpu",
    )
    labels, distances = index.knn_query(test, k=5)
    exact = np.einsum("nd,nkd->nk", test, keys[labels.astype(np.int64)])
    np.testing.assert_allclose(distances, 1 - exact, rtol=1e-5, atol=1e-5)
    assert recall10(index, keys, test) > 0.8


def test_save_and_load_round_trip(data, tmp_path):
    keys, _, test = data
    index = build(keys, construction="xbox", fill_lists=False)
    index.save_index(tmp_path / "h.amips")
    loaded = AmortizedHNSW(space="ip", dim=D)
    loaded.load_index(tmp_path / "h.amips", max_elements=len(keys) + 10)
    assert loaded.construction == "xbox" and loaded.xbox.max_norm == index.xbox.max_norm
    assert not loaded.fill_lists  # and later insertions follow it
    assert loaded.ef == 50 and loaded.get_max_elements() == len(keys) + 10
    for a, b in zip(index.knn_query(test, k=5), loaded.knn_query(test, k=5)):
        np.testing.assert_array_equal(a, b)


def test_plain_hnswlib_files_load_and_wrong_dims_are_refused(data, tmp_path):
    keys, _, test = data
    plain = hnswlib.Index(space="ip", dim=D)
    plain.init_index(100)
    plain.add_items(keys[:100])
    plain.mark_deleted(7)
    plain.save_index(str(tmp_path / "plain.bin"))
    loaded = AmortizedHNSW(space="ip", dim=D)
    loaded.load_index(tmp_path / "plain.bin", max_elements=150, allow_replace_deleted=True)
    assert (loaded.get_current_count(), loaded.get_max_elements()) == (100, 150)
    np.testing.assert_array_equal(loaded.knn_query(test, 3)[0], plain.knn_query(test, 3)[0])
    loaded.add_items(keys[100:101], [500], replace_deleted=True)  # takes deleted label 7's slot
    assert loaded.get_current_count() == 100 and 7 not in loaded.get_ids_list()
    with pytest.raises(HNSWError, match="dim"):
        AmortizedHNSW(space="ip", dim=D + 1).load_index(tmp_path / "plain.bin")
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(HNSWError, match="not a readable AmortizedHNSW or hnswlib file"):
        AmortizedHNSW(space="ip", dim=D).load_index(tmp_path / "junk.bin")
    build(keys[:200]).save_index(tmp_path / "ours")
    with pytest.raises(ValueError, match="dim"):
        AmortizedHNSW(space="ip", dim=D + 1).load_index(tmp_path / "ours")
    wrapped = AmortizedHNSW.wrap(plain)  # a copy of its graph
    np.testing.assert_array_equal(wrapped.knn_query(test, 3)[0], plain.knn_query(test, 3)[0])
    assert sorted(wrapped.get_ids_list()) == sorted(plain.get_ids_list())
    with pytest.raises(HNSWError, match="Label not found"):
        wrapped.get_items([7])  # deleted in plain
    wrapped.resize_index(101)
    wrapped.add_items(keys[100:101], [100])
    assert plain.get_current_count() == 100 and wrapped.get_current_count() == 101


def test_wrap_an_xbox_graph(data):
    keys, _, test = data
    transform = ap.XboxTransform(D)
    graph = hnswlib.Index(space="ip", dim=D + 1)
    graph.init_index(len(keys))
    graph.add_items(transform.add_keys(keys))
    wrapped = AmortizedHNSW.wrap(graph, xbox=True)
    assert wrapped.dim == D and wrapped.xbox.max_norm == pytest.approx(transform.max_norm, rel=1e-5)
    _, distances = wrapped.knn_query(test, k=3)
    assert (distances < 1 - 0).any()  # inner products with q, not with [q, 0] against the pad


def test_one_graph_in_hnswlibs_format_both_ways(data, tmp_path):
    keys, _, test = data
    ours = build(keys[:1000])
    ours.mark_deleted(3)
    ours.save_index(tmp_path / "ours")
    with zipfile.ZipFile(tmp_path / "ours") as archive:
        (tmp_path / "graph.bin").write_bytes(archive.read("graph.bin"))
    theirs = hnswlib.Index(space="ip", dim=D)  # hnswlib reads the graph we saved
    theirs.load_index(str(tmp_path / "graph.bin"))
    theirs.set_ef(200)
    assert sorted(theirs.get_ids_list()) == list(range(1000))
    np.testing.assert_array_equal(theirs.get_items([5, 9]), keys[[5, 9]])
    with pytest.raises(RuntimeError):
        theirs.get_items([3])  # deleted
    live = np.delete(np.arange(1000), 3)
    truth = live[ap.topk_dot(test, keys[live], 10)[1]]
    for index in (theirs, ours.index):
        found = index.knn_query(test, k=10)[0]
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth)]) > 0.95


def test_a_label_added_again_moves_and_a_filter_keeps_only_what_it_accepts(data):
    keys, _, test = data
    index = build(keys[:1000])
    target = test[0] * 50  # far beyond every key, in the first query's direction
    index.add_items(target[None], [17])  # label 17 moves there: updated in place
    assert index.get_current_count() == 1000
    np.testing.assert_allclose(index.get_items([17])[0], target)
    assert index.knn_query(test[:1], k=1)[0][0, 0] == 17
    labels, distances = index.knn_query(test, k=5, filter=lambda label: label % 3 == 0)
    assert (labels % 3 == 0).all()
    kept = np.arange(0, 1000, 3)
    moved = keys[:1000].copy()
    moved[17] = target
    truth = kept[ap.topk_dot(test, moved[kept], 5)[1]]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(labels.tolist(), truth)]) > 0.95
    with pytest.raises(HNSWError, match="callable"):
        index.knn_query(test, k=5, filter=[1, 2])


def test_labels_find_their_elements_as_a_dict_would():
    from amips_plugins.hnsw.labels import Labels

    rng = np.random.default_rng(0)
    labels, table = Labels(20_000), {}
    for size in rng.integers(1, 3000, 12):  # some lookups sort recent labels, some all of them
        fresh = rng.choice(10**9, size, replace=False)
        fresh = fresh[[label not in table for label in fresh.tolist()]]
        table.update({label: labels.count + i for i, label in enumerate(fresh.tolist())})
        labels.append(fresh)
        asked = np.concatenate([rng.choice(labels.all, 50), rng.integers(0, 10**9, 50)])
        expected = [table.get(label, -1) for label in asked.tolist()]
        np.testing.assert_array_equal(labels.elements(asked), expected)
    moved = rng.choice(labels.count, 10, replace=False)
    for element in moved.tolist():
        del table[int(labels.all[element])]
    new = np.arange(10) + 2 * 10**9
    labels.relabel(moved, new)
    table.update(dict(zip(new.tolist(), moved.tolist())))
    asked = np.concatenate([new, labels.all[:100]])
    np.testing.assert_array_equal(labels.elements(asked), [table[a] for a in asked.tolist()])


def test_concurrent_queries(data):
    keys, _, test = data
    index = build(keys)
    expected = index.knn_query(test, k=4, num_threads=1)
    for labels, _ in call_from_threads(lambda: index.knn_query(test, k=4, num_threads=1), 4):
        np.testing.assert_array_equal(labels, expected[0])


def test_bad_input(data):
    keys, _, test = data
    with pytest.raises(ValueError, match="space"):
        AmortizedHNSW(space="l2", dim=D)
    with pytest.raises(ValueError, match="construction"):
        AmortizedHNSW(space="ip", dim=D, construction="cosine")
    index = AmortizedHNSW(space="ip", dim=D)
    index.init_index(100)
    with pytest.raises(ValueError, match="empty"):
        index.knn_query(test, k=1)
    index.add_items(keys[:50])
    with pytest.raises(ValueError, match="exceeds the 50"):
        index.knn_query(test, k=51)
    with pytest.raises(ValueError, match="dimension"):
        index.knn_query(test[:, :-1], k=1)
    with pytest.raises(ValueError, match="dimension"):
        index.add_items(keys[:5, :-1])
    bad = keys[50:60].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.add_items(bad)
    with pytest.raises(ValueError, match="max_elements"):
        index.add_items(keys[50:200])
    with pytest.raises(ValueError, match="ids"):
        index.add_items(keys[50:52], [1])
    assert index.get_current_count() == 50  # nothing half-added
    index.resize_index(200)
    index.add_items(keys[50:200])
    assert index.get_current_count() == 200
    index.mark_deleted(0)
    labels, _ = index.knn_query(keys[:1], k=5)
    assert 0 not in labels


# --- state, files and threads -------------------------------------------------------------------
def test_an_uninitialised_index_refuses_every_call(tmp_path):
    index = AmortizedHNSW(space="ip", dim=D)
    q = np.zeros((1, D), np.float32)
    calls = [
        lambda: index.knn_query(q, 1),
        index.get_current_count,
        index.get_max_elements,
        index.get_ids_list,
        lambda: index.get_items([0]),
        lambda: index.resize_index(10),
        lambda: index.mark_deleted(0),
        lambda: index.add_items(q),
        lambda: index.save_index(tmp_path / "x.amips"),
    ]
    for call in calls:
        with pytest.raises(HNSWError, match="init_index"):
            call()
    assert list(tmp_path.iterdir()) == []  # no temp file or folder left behind


@pytest.mark.parametrize("M", [0, 1, -1])
def test_init_index_refuses_a_degree_below_two(M):
    index = AmortizedHNSW(space="ip", dim=D)
    with pytest.raises(ValueError, match="M"):
        index.init_index(10, M=M)


def test_errors_are_value_errors_and_hnswlib_runtime_errors(data):
    keys, queries, _ = data
    index = build(keys[:50])
    for call, match in [
        (lambda: index.resize_index(10), "below"),
        (lambda: index.mark_deleted(10**6), "not found"),
        (lambda: index.init_index(10), "already"),
    ]:
        with pytest.raises(HNSWError, match=match) as e:
            call()
        assert isinstance(e.value, ValueError) and isinstance(e.value, RuntimeError)
    for label in range(50):
        index.mark_deleted(label)
    with pytest.raises(HNSWError, match="empty"):
        index.knn_query(queries[:1], 1)


def test_replace_deleted_refuses_a_batch_that_does_not_fit_whole(data):
    keys, _, _ = data
    index = AmortizedHNSW(space="ip", dim=D)
    index.init_index(10, allow_replace_deleted=True)
    index.add_items(keys[:10], np.arange(10))
    index.mark_deleted(3)
    live = [0, 1, 2, 4, 5, 6, 7, 8, 9]
    before = index.get_items(live)
    with pytest.raises(HNSWError, match="max_elements"):
        index.add_items(keys[10:12], [20, 21], replace_deleted=True)  # one free slot, two keys
    assert sorted(index.get_ids_list()) == list(range(10))
    np.testing.assert_array_equal(index.get_items(live), before)
    index.add_items(keys[10:11], [20], replace_deleted=True)  # fits: takes label 3's slot
    assert sorted(index.get_ids_list()) == [0, 1, 2, 4, 5, 6, 7, 8, 9, 20]


def _saved(data, tmp_path, **kw):
    keys, _, _ = data
    path = tmp_path / "index.amips"
    build(keys[:300], **kw).save_index(path)
    return path


def test_a_crafted_graph_is_refused_before_hnswlib_reads_it(data, tmp_path):
    crafts = {
        "entry point": lambda b: b[:52] + (0x7FFFFFFF).to_bytes(4, "little") + b[56:],
        "link": lambda b: b[:100] + (10**6).to_bytes(4, "little") + b[104:],
        "truncated": lambda b: b[: len(b) - 7],
        "capacity": lambda b: b[:8] + (2**60).to_bytes(8, "little") + b[16:],
    }
    for craft in crafts.values():
        path = _saved(data, tmp_path)
        rewrite_member(path, "graph.bin", craft)
        with pytest.raises(HNSWError, match="not a readable"):
            AmortizedHNSW(space="ip", dim=D).load_index(path)


def test_meta_that_disagrees_with_the_graph_is_refused(data, tmp_path):
    changes = [
        {"candidates": 0},
        {"construction": "bogus"},
        {"construction": "xbox"},  # without an Xbox state
        {"ef": -3},
        {"sort_batches": "yes"},
        {"fill_lists": 1},
    ]
    for change in changes:
        path = _saved(data, tmp_path)
        rewrite_member(
            path, "meta.json", lambda b, c=change: json.dumps({**json.loads(b), **c}).encode()
        )
        with pytest.raises(HNSWError):
            AmortizedHNSW(space="ip", dim=D).load_index(path)
    # A graph of another dimension under a meta that claims ours.
    other = AmortizedHNSW(space="ip", dim=D + 6)
    other.init_index(5)
    other.add_items(np.ones((5, D + 6), np.float32))
    path = tmp_path / "other.amips"
    other.save_index(path)
    rewrite_member(path, "meta.json", lambda b: json.dumps({**json.loads(b), "dim": D}).encode())
    with pytest.raises(HNSWError, match="layout"):
        AmortizedHNSW(space="ip", dim=D).load_index(path)


def test_a_member_larger_than_its_archive_is_refused(data, tmp_path):
    path = _saved(data, tmp_path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["graph.bin"] += bytes(50_000_000)  # compresses to almost nothing
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, blob in members.items():
            z.writestr(n, blob)
    with pytest.raises(HNSWError, match="more than its archive"):
        AmortizedHNSW(space="ip", dim=D).load_index(path)


def test_deleted_labels_survive_save_load_and_count_against_k(data, tmp_path):
    keys, queries, _ = data
    index = build(keys[:20])
    for label in range(15):
        index.mark_deleted(label)
    index.save_index(tmp_path / "i.amips")
    loaded = AmortizedHNSW(space="ip", dim=D)
    loaded.load_index(tmp_path / "i.amips")
    with pytest.raises(HNSWError, match="exceeds the 5"):
        loaded.knn_query(queries[:1], 6)
    labels, _ = loaded.knn_query(queries[:3], 5)
    assert set(labels.ravel().tolist()) <= set(range(15, 20))


def test_searches_and_saves_beside_resize_and_add_see_whole_states(data, tmp_path):
    keys, queries, _ = data
    index = AmortizedHNSW(space="ip", dim=D)
    index.init_index(100)
    index.add_items(keys[:100])
    index.set_ef(100)

    def search():
        try:
            labels, distances = index.knn_query(queries[:20], 5)
        except HNSWError as e:  # hnswlib may find fewer than k while keys are linked in
            assert "contiguous" in str(e)
            return
        # The count never shrinks, so it bounds what the search saw; the batch being linked in
        # (on several threads, its labels in any order) is the one that ends at the next 100.
        stored = index.get_current_count()
        assert (labels < -(-stored // 100) * 100).all()
        expected = 1 - np.einsum("qd,qkd->qk", queries[:20], keys[labels.astype(np.int64)])
        np.testing.assert_allclose(distances, expected, rtol=1e-5, atol=1e-4)

    saves = iter(range(10**6))

    def save_and_load():
        path = tmp_path / f"{next(saves)}.hnsw"
        index.save_index(path)
        loaded = AmortizedHNSW(space="ip", dim=D)
        loaded.load_index(path)
        stored = loaded.get_current_count()
        assert stored % 100 == 0  # whole batches only
        assert sorted(loaded.get_ids_list()) == list(range(stored))
        np.testing.assert_array_equal(loaded.get_items(range(stored)), keys[:stored])
        path.unlink()

    def write():
        for size in range(200, 3001, 100):
            index.resize_index(size)
            index.add_items(keys[size - 100 : size], np.arange(size - 100, size))

    calls = beside_writer([search, search, save_and_load], write)
    assert min(calls) > 0
    assert index.get_current_count() == 3000


def test_pickle_round_trip_gives_the_same_results(data):

    keys, queries, _ = data
    index = build(keys[:500])
    copy = pickle.loads(pickle.dumps(index))
    np.testing.assert_array_equal(copy.knn_query(queries, 5)[0], index.knn_query(queries, 5)[0])
    copy.resize_index(600)
    copy.add_items(keys[500:510])  # its locks work
    assert copy.get_current_count() == 510


# --- drop-in for hnswlib.Index ------------------------------------------------------------------


def test_threads_file_size_and_single_vectors_as_in_hnswlib(data, tmp_path):
    keys, _, test = data
    ours, plain = build(keys[:500]), hnswlib.Index(space="ip", dim=D)
    plain.init_index(500)
    plain.add_items(keys[:500])
    ours.set_num_threads(1)
    assert ours.num_threads == 1
    ours.num_threads = 2
    assert ours.index.num_threads == 2
    ours.index.save_index(str(tmp_path / "graph.bin"))
    assert ours.index_file_size() == (tmp_path / "graph.bin").stat().st_size
    labels, distances = ours.knn_query(test[0], k=3)  # one vector: a batch of one
    assert labels.shape == distances.shape == (1, 3)
    ours.resize_index(501)
    ours.add_items(keys[500], 500)
    assert ours.get_current_count() == 501
    items = ours.get_items([500, 3], return_type="list")
    assert isinstance(items, list) and np.allclose(items, keys[[500, 3]])
    labels, _ = ours.knn_query(test[:4], k=1)  # (4, 1) labels, as hnswlib's tests pass them
    np.testing.assert_array_equal(ours.get_items(labels), keys[labels.ravel().astype(np.int64)])
    with pytest.raises(ValueError, match="sequence of labels"):
        ours.get_items(3)
    ours.set_num_threads(0)  # hnswlib: all cores
    ours.add_items(keys[:2], np.array([[0], [1]]))  # (n, 1) ids update labels 0 and 1
    assert ours.get_current_count() == 501


def test_wrong_dimensions_are_also_hnswlibs_runtime_error(data):
    keys, _, test = data
    index = build(keys[:100])
    for call in (lambda: index.knn_query(test[:, :3]), lambda: index.add_items(keys[:2, :3])):
        with pytest.raises(RuntimeError, match="dimension 10"):
            call()
        with pytest.raises(ValueError, match="dimension 10"):
            call()


# --- declarative recall -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibrated(data):
    """A sparse graph (M 8) whose queries need different ef, calibrated on 1000 queries."""
    keys, train, _ = data
    index = AmortizedHNSW(space="ip", dim=D)
    index.init_index(max_elements=len(keys), M=8, ef_construction=40, random_seed=1)
    index.add_items(keys, num_threads=1)
    index.set_ef(33)
    curve = index.calibrate(train, 10, max_ef=200, num_threads=1)
    return index, curve


def test_calibrate_measures_recall_per_ef_and_keeps_the_index_ef(calibrated):
    index, curve = calibrated
    efs, recalls = list(curve), list(curve.values())
    assert efs[0] == 10 and efs == sorted(efs) and efs[-1] <= 200
    assert recalls[0] < 0.9 and recalls[-1] > 0.97  # a range worth choosing in
    assert index.ef == 33


def test_target_recall_is_met_on_held_out_queries_with_less_ef_for_lower_targets(data, calibrated):
    keys, _, test = data
    index, curve = calibrated
    _, true = ap.topk_dot(test, keys, 10)
    previous = 0.0
    for target in (0.85, 0.9, 0.95):
        labels, distances = index.knn_query(test, 10, target_recall=target)
        found = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels.tolist(), true.tolist())])
        assert abs(found - target) < 0.04, (target, found)
        assert found > previous
        previous = found
        groups_ef = index._effort.efforts_for(target)[index._effort.group_of(test)]
        for ef in np.unique(groups_ef):  # each query is searched at its group's ef
            rows = groups_ef == ef
            alone = index._walk(test[rows], 10, np.full(rows.sum(), ef, np.int32), 1, None)
            np.testing.assert_array_equal(alone[0], labels[rows])
            np.testing.assert_array_equal(alone[1], distances[rows])
        exact = 1 - np.einsum("ij,ikj->ik", test, keys[labels.astype(np.int64)])
        np.testing.assert_allclose(distances, exact, atol=1e-5)  # exact scores, not the codes'
    assert index._effort.efforts_for(0.85).mean() < index._effort.efforts_for(0.95).mean()


def test_target_recall_errors(data, calibrated):
    keys, train, test = data
    index, curve = calibrated
    with pytest.raises(HNSWError, match="calibrated for k = 10"):
        index.knn_query(test, 5, target_recall=0.9)
    with pytest.raises(HNSWError, match="above the calibrated maximum"):
        index.knn_query(test, 10, target_recall=1.0 if max(curve.values()) < 1 else 1.5)
    with pytest.raises(HNSWError, match=r"\(0, 1\]"):
        index.knn_query(test, 10, target_recall=0)
    fresh = build(keys)
    with pytest.raises(HNSWError, match="needs a calibration"):
        fresh.knn_query(test, 10, target_recall=0.9)
    with pytest.raises(HNSWError, match="at least one query"):
        fresh.calibrate(train[:0], 10)
    with pytest.raises(HNSWError, match="exceeds"):
        fresh.calibrate(train, len(keys) + 1)
    fresh.calibrate(train[:300], 10, max_ef=20)
    fresh.query_transform = None  # a new search path: the calibration is gone
    with pytest.raises(HNSWError, match="needs a calibration"):
        fresh.knn_query(test, 10, target_recall=0.9)


@pytest.mark.parametrize("construction", ["ip", "xbox"])
def test_the_walk_with_a_beam_over_every_key_is_exact(data, construction):
    keys, _, test = data
    index = build(keys[:500], construction=construction)
    labels, distances = index._walk(test, 10, np.full(len(test), 500, np.int32), 0, None)
    scores, true = ap.topk_dot(test, keys[:500], 10)
    np.testing.assert_array_equal(labels, true)
    np.testing.assert_allclose(distances, 1 - scores, atol=1e-5)


def test_target_recall_sees_keys_added_and_deleted_after_calibration(data):
    keys, train, test = data
    index = build(keys[:1000])
    index.calibrate(train[:200], 10, max_ef=50)
    index.knn_query(test, 10, target_recall=0.9)
    index.resize_index(1001)
    index.add_items(test[:1] * 100, [5000])  # the best key for the first query by far
    assert index.knn_query(test[:1], 10, target_recall=0.9)[0][0, 0] == 5000
    index.mark_deleted(5000)
    assert 5000 not in index.knn_query(test[:1], 10, target_recall=0.9)[0]
    best = int(index.knn_query(test[:1], 10, target_recall=0.9)[0][0, 0])
    index.mark_deleted(best)
    labels = index.knn_query(test, 10, target_recall=0.9)[0]
    assert best not in labels and 5000 not in labels
    even, _ = index.knn_query(test, 10, target_recall=0.9, filter=lambda label: label % 2 == 0)
    assert (even % 2 == 0).all() and best not in even

    copy = pickle.loads(pickle.dumps(index))
    np.testing.assert_array_equal(copy.knn_query(test, 10, target_recall=0.9)[0], labels)


def level0_links(index):
    """Every level-0 link of the index's graph as (element, element) pairs."""
    rows = index._graph.arrays()["links0"]
    return {(e, int(t)) for e, row in enumerate(rows) for t in row[1 : 1 + (row[0] & 0xFFFF)]}


def test_learned_edges_raise_recall_at_a_small_ef_and_are_kept_in_hnswlibs_file(data, tmp_path):
    keys, train, test = data
    index = AmortizedHNSW(space="ip", dim=D)
    index.init_index(max_elements=len(keys), M=4, ef_construction=40, random_seed=1)
    index.add_items(keys, num_threads=1)  # a sparse graph, so that small beams miss answers
    index.set_ef(10)
    index.calibrate(train[700:], 10, max_ef=100, num_threads=1)
    plain = recall10(index, keys, test)
    before = level0_links(index)
    added = index.fit_edges(train[:700], num_threads=1)
    assert recall10(index, keys, test) > plain + 0.02
    now = level0_links(index)
    assert added > 0 and len(now - before) == added  # in room, or in place of filling links
    assert (index._graph.arrays()["links0"][:, 0] & 0xFFFF).max() <= 8  # 2 M on level 0
    index.knn_query(test, 10, target_recall=0.9)
    assert index.last_search_stats["calibration"] == "measured again"
    index.save_index(tmp_path / "edges")
    loaded = AmortizedHNSW(space="ip", dim=D)
    loaded.load_index(tmp_path / "edges")
    np.testing.assert_array_equal(loaded._graph.arrays()["links0"], index._graph.arrays()["links0"])
    with zipfile.ZipFile(tmp_path / "edges") as archive:
        (tmp_path / "graph.bin").write_bytes(archive.read("graph.bin"))
    theirs = hnswlib.Index(space="ip", dim=D)  # hnswlib walks the learned edges too
    theirs.load_index(str(tmp_path / "graph.bin"))
    theirs.set_ef(10)
    assert recall10(theirs, keys, test) > plain
    for bad, match in (
        (dict(answers=1), "2 <= answers"),
        (dict(answers=20, ef=10), "2 <= answers"),
        (dict(answers=0), "positive"),
    ):
        with pytest.raises(ValueError, match=match):
            index.fit_edges(train, **bad)
    with pytest.raises(HNSWError, match="dimension|columns"):
        index.fit_edges(train[:, :3])
    with pytest.raises(HNSWError, match="at least one"):
        index.fit_edges(train[:0])


def test_a_calibration_on_the_queries_edges_learned_from_is_refused(data, tmp_path):
    keys, train, test = data
    index = build(keys)
    index.calibrate(train[700:], 10, max_ef=100, num_threads=1)
    index.fit_edges(train[:700], num_threads=1)
    index.save_index(tmp_path / "edges")
    loaded = AmortizedHNSW(space="ip", dim=D)
    loaded.load_index(tmp_path / "edges")
    for each in (index, pickle.loads(pickle.dumps(index)), loaded):
        with pytest.raises(
            HNSWError, match="100% of the calibration queries are queries fit_edges"
        ):
            each.calibrate(train[600:700], 10, max_ef=100)
        each.calibrate(np.vstack([train[699:700], test]), 10, max_ef=100)  # 1 of 201: passes
    index.calibrate(train[700:800], 10, max_ef=100)
    index.fit_edges(train[700:], num_threads=1)  # the kept calibration queries, learned from
    with pytest.raises(ap.StaleCalibrationError, match="fit_edges learned from its queries"):
        index.knn_query(test, 10, target_recall=0.9)


def test_the_graph_walk_refuses_links_outside_the_graph():
    keys = np.eye(3, dtype=np.float32)
    links0 = np.array([[1, 1], [1, 2], [1, 0]], np.uint32)
    none = np.zeros(0, np.uint32)
    zeros, flags = np.zeros(3, np.int64), np.zeros(3, np.uint8)
    levels = np.zeros(3, np.int32)

    def graph(**change):
        arrays = dict(keys=keys, links0=links0, upper=none, upper_offsets=zeros, levels=levels)
        arrays.update(max_m=1, entry=0, deleted=flags)
        return ap._core.GraphSearch(**{**arrays, **change})

    scores, elements, _ = graph().search(keys, keys, 1, np.full(3, 3, np.int32))
    np.testing.assert_array_equal(elements.ravel(), [0, 1, 2])
    bad = links0.copy()
    bad[2, 1] = 3
    with pytest.raises(ValueError, match="outside the 3 elements"):
        graph(links0=bad)
    with pytest.raises(ValueError, match="upper levels lie outside"):
        graph(levels=np.array([1, 0, 0], np.int32))
    with pytest.raises(ValueError, match="entry point"):
        graph(entry=7)
    with pytest.raises(ValueError, match="keys or its codes"):
        graph(codes=np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="at least k"):
        graph().search(keys, keys, 2, np.full(3, 1, np.int32))


def test_the_calibration_is_saved_with_the_index(data, calibrated, tmp_path):
    _, _, test = data
    index, _ = calibrated
    index.save_index(tmp_path / "index.zip")
    loaded = AmortizedHNSW(space="ip", dim=D)
    loaded.load_index(tmp_path / "index.zip")
    for result, expected in zip(
        loaded.knn_query(test, 10, target_recall=0.9), index.knn_query(test, 10, target_recall=0.9)
    ):
        np.testing.assert_array_equal(result, expected)
    index.index.save_index(str(tmp_path / "plain.bin"))  # hnswlib's file: no calibration
    plain = AmortizedHNSW(space="ip", dim=D)
    plain.load_index(tmp_path / "plain.bin")
    with pytest.raises(HNSWError, match="needs a calibration"):
        plain.knn_query(test, 10, target_recall=0.9)

    def bad_calibration(blob):
        meta = json.loads(blob)
        meta["calibration"]["recall"][0][0] = 2.0
        return json.dumps(meta).encode()

    def score_bins(blob):  # IVF's kind of groups: by a score, which a walk does not have
        meta = json.loads(blob)
        groups = len(meta["calibration"].pop("centroids"))
        meta["calibration"]["edges"] = list(range(groups - 1))
        return json.dumps(meta).encode()

    index.save_index(tmp_path / "bins.zip")
    rewrite_member(tmp_path / "bins.zip", "meta.json", score_bins)
    with pytest.raises(HNSWError, match="group queries by direction"):
        AmortizedHNSW(space="ip", dim=D).load_index(tmp_path / "bins.zip")
    rewrite_member(tmp_path / "index.zip", "meta.json", bad_calibration)
    with pytest.raises(HNSWError, match="inconsistent effort calibration"):
        AmortizedHNSW(space="ip", dim=D).load_index(tmp_path / "index.zip")


def test_target_recall_on_an_xbox_graph_is_met_with_exact_distances(data):
    keys, train, test = data
    index = build(keys, construction="xbox")
    index.calibrate(train, 10, max_ef=200, num_threads=1)
    _, true = ap.topk_dot(test, keys, 10)
    labels, distances = index.knn_query(test, 10, target_recall=0.9)
    found = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels.tolist(), true.tolist())])
    assert abs(found - 0.9) < 0.04
    exact = 1 - np.einsum("ij,ikj->ik", test, keys[labels.astype(np.int64)])
    np.testing.assert_allclose(distances, exact, atol=1e-5)
