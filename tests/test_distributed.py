"""ShardedIVF on a local Ray cluster started here (2 CPUs, 4 actors per index)."""

from __future__ import annotations

import json
import logging
import time

import faiss
import numpy as np
import pytest

from amips_plugins import AmortizedIVF
from amips_plugins.exact import topk_dot

D, NLIST, SHARDS = 16, 32, 4


ray = pytest.importorskip("ray")
from amips_plugins.distributed import ShardedIVF, ShardUnavailableError  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((6000, D)) * rng.uniform(0.5, 2.0, (6000, 1))
    queries = rng.standard_normal((700, D))
    return (
        keys.astype(np.float32),
        queries[:500].astype(np.float32),
        queries[500:].astype(np.float32),
    )


def build(keys, train_q=None, **kwargs):
    index = ShardedIVF(D, NLIST, SHARDS, timeout_s=120, **kwargs)  # a hung shard fails the test
    index.train(keys)
    index.add(keys)
    if train_q is not None:
        index.fit_router(train_q)
    return index


@pytest.fixture(scope="module")
def routed(data):
    keys, train_q, _ = data
    return build(keys, train_q, nprobe=4)


def single_machine(sharded, keys):
    """One AmortizedIVF with the same quantizer, router and keys."""
    index = AmortizedIVF.from_faiss(faiss.clone_index(sharded.routing_index))
    index.add(keys)
    index.router = sharded.router
    return index


@pytest.mark.parametrize("nprobe", [1, 4, 32])
def test_results_equal_one_amortized_ivf_probing_the_same_lists(data, routed, nprobe):
    keys, _, test_q = data
    single = single_machine(routed, keys)
    single.nprobe = nprobe
    D1, I1 = single.search(test_q, 10)
    D2, I2 = routed.search(test_q, 10, nprobe=nprobe)
    np.testing.assert_array_equal(I2, I1)
    np.testing.assert_array_equal(D2, D1)
    stats = routed.last_search_stats
    assert 1 <= stats["shards_contacted"] <= SHARDS
    assert stats["lists_probed"] == nprobe and stats["missing_shards"] == []
    if nprobe == 1:
        assert stats["shards_contacted"] == 1


@pytest.mark.parametrize("max_shards", [1, 2])
def test_max_shards_bounds_the_shards_each_query_contacts(data, routed, max_shards):
    keys, _, test_q = data
    D, I = routed.search(test_q, 10, nprobe=8, max_shards=max_shards)
    lists = routed.probed_lists(test_q, nprobe=8, max_shards=max_shards)
    contacted = [len(set(routed.shard_of_list[row[row >= 0]])) for row in lists]
    assert max(contacted) == max_shards
    assert routed.last_search_stats["shards_contacted"] == np.mean(contacted)
    full = routed.probed_lists(test_q, nprobe=8)
    assert (lists[:, 0] == full[:, 0]).all()  # the best list's shard is always contacted
    D1, I1 = single_machine(routed, keys).search_lists(test_q, 10, lists)
    np.testing.assert_array_equal(I, I1)
    np.testing.assert_array_equal(D, D1)


def test_the_router_is_the_one_a_single_index_fits_from_all_keys(data, routed):
    keys, train_q, _ = data
    single = AmortizedIVF.from_faiss(faiss.clone_index(routed.routing_index))
    single.add(keys)
    single.fit_router(train_q, num_pieces=16 * single.nlist)  # the max-affine router it fits
    np.testing.assert_array_equal(routed.router.pieces, single.router.pieces)
    np.testing.assert_array_equal(routed.router.offsets, single.router.offsets)


def test_exact_search_reduces_every_shards_answers(data, routed):
    keys, _, test_q = data
    scores, ids = routed.exact_search(test_q, 5)
    want_scores, want_ids = topk_dot(test_q, keys, 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_keys_placement_contacts_every_shard_for_the_same_results(data, routed):
    keys, train_q, test_q = data
    broadcast = build(keys, train_q, placement="keys", nprobe=4)
    # its own quantizer (trained anew), so compare with a single index sharing it
    single = single_machine(broadcast, keys)
    single.nprobe = 4
    np.testing.assert_array_equal(broadcast.search(test_q, 10)[1], single.search(test_q, 10)[1])
    assert broadcast.last_search_stats["shards_contacted"] == SHARDS
    with pytest.raises(ValueError, match='max_shards needs placement="lists"'):
        broadcast.search(test_q, 10, max_shards=2)
    assert routed.search(test_q, 10)[0].shape == (len(test_q), 10)
    assert routed.last_search_stats["shards_contacted"] < SHARDS


def test_compressed_lists_keep_raw_keys_for_the_router(data):
    keys, train_q, test_q = data
    index = build(keys, train_q, codes="PQ4x4", nprobe=4)
    single = AmortizedIVF.from_faiss(faiss.clone_index(index.routing_index))
    single.add(keys)
    single.fit_router(train_q, keys=keys, num_pieces=16 * single.nlist)
    np.testing.assert_array_equal(index.router.pieces, single.router.pieces)
    single.nprobe = 4
    np.testing.assert_array_equal(index.search(test_q, 10)[1], single.search(test_q, 10)[1])


def test_save_and_load_give_the_same_results(data, routed, tmp_path):
    _, _, test_q = data
    routed.save(tmp_path / "index")
    loaded = ShardedIVF.load(tmp_path / "index", timeout_s=120)
    assert (loaded.ntotal, loaded.nprobe, loaded.num_shards) == (routed.ntotal, 4, SHARDS)
    for a, b in zip(loaded.search(test_q, 10), routed.search(test_q, 10)):
        np.testing.assert_array_equal(a, b)
    assert loaded.shard_sizes() == routed.shard_sizes()


def wait_for_free_cpus(cpus: float) -> bool:
    """Whether the cluster's free CPUs come back to ``cpus`` (killed actors free theirs)."""
    for _ in range(300):
        if ray.available_resources().get("CPU", 0) >= cpus:
            return True
        time.sleep(0.1)
    return False


def test_a_bad_directory_is_refused_clearly(data, routed, tmp_path):
    with pytest.raises(ValueError, match="not a readable ShardedIVF directory"):
        ShardedIVF.load(tmp_path / "absent")
    routed.save(tmp_path / "index")
    meta = json.loads((tmp_path / "index" / "meta.json").read_text())
    (tmp_path / "index" / "meta.json").write_text(json.dumps({**meta, "ntotal": 1}))
    free = ray.available_resources()["CPU"]
    with pytest.raises(ValueError, match="the shards hold 6000 keys, meta.json says 1") as e:
        ShardedIVF.load(tmp_path / "index", actor_options={"num_cpus": 0.25})
    assert wait_for_free_cpus(free), e.value  # its actors were stopped
    (tmp_path / "index" / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "index" / "shard-2.ivf").unlink()
    with pytest.raises(ValueError, match=r"missing shard files \['shard-2.ivf'\]"):
        ShardedIVF.load(tmp_path / "index")


def kill(actor) -> None:
    """Kill a shard's actor and wait until it is gone: ray.kill only asks, and a call made
    at once can still run."""
    ray.kill(actor)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            continue
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers")


def test_a_dead_shard_raises_or_gives_a_result_marked_partial(data):
    keys, train_q, test_q = data
    index = build(keys, train_q, nprobe=2)
    D_all, I_all = index.search(test_q, 10)
    kill(index._shards[1])
    with pytest.raises(ShardUnavailableError, match="shard 1"):
        index.search(test_q, 10)
    D, I = index.search(test_q, 10, allow_partial=True)
    stats = index.last_search_stats
    assert stats["missing_shards"] == [1] and stats["partial_queries"] > 0
    lists = index.routing_index.probed_lists(test_q, params=faiss.SearchParametersIVF(nprobe=2))
    owner = index.shard_of_list[lists]
    whole = ~(owner == 1).any(axis=1)  # queries none of whose lists were on the dead shard
    assert stats["partial_queries"] == (~whole).sum()
    np.testing.assert_array_equal(I[whole], I_all[whole])
    with pytest.raises(ShardUnavailableError, match="shard_sizes could not reach every shard"):
        index.shard_sizes()


def test_a_shard_that_does_not_answer_in_time_is_unavailable(data, routed):
    _, _, test_q = data
    routed.timeout_s = 1e-9
    try:
        with pytest.raises(ShardUnavailableError, match="GetTimeoutError"):
            routed.search(test_q, 10)
    finally:
        routed.timeout_s = 120
    assert routed.search(test_q, 10)[1].shape == (len(test_q), 10)


def test_bad_input_gets_a_clear_error(data, routed):
    keys, _, test_q = data
    with pytest.raises(ValueError, match="placement"):
        ShardedIVF(D, NLIST, SHARDS, placement="random")
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        ShardedIVF(D, NLIST, SHARDS, timeout_s=-1)
    with pytest.raises(TypeError, match="timeout_s must be a number"):
        ShardedIVF(D, NLIST, SHARDS, timeout_s="x")
    with pytest.raises(ValueError, match="cannot each hold"):
        ShardedIVF(D, 4, 8)
    with pytest.raises(RuntimeError, match="train the index first"):
        ShardedIVF(D, NLIST, SHARDS).add(keys)
    with pytest.raises(ValueError, match="dimension|shape"):
        routed.search(test_q[:, :8], 10)
    bad = test_q[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        routed.search(bad, 10)
    with pytest.raises(ValueError, match="nprobe"):
        routed.search(test_q, 10, nprobe=0)
    with pytest.raises(ValueError, match="train before adding"):
        routed.train(keys)
    D_pad, I_pad = routed.search(test_q[:2], 7000, nprobe=32)  # k beyond ntotal: padded
    assert (I_pad[:, 6000:] == -1).all() and (D_pad[:, 6000:] == np.finfo(np.float32).min).all()


def test_an_add_a_dead_shard_fails_keeps_none_of_its_keys_and_reuses_no_id(data):
    keys, _, test_q = data
    first, batch = keys[:3000], keys[3000:]
    index = build(first)
    live = [0, 2, 3]
    kill(index._shards[1])
    with pytest.raises(ShardUnavailableError, match="shard 1.*none of the 3000 keys was added"):
        index.add(batch)
    assert index.ntotal == 3000
    held = [ray.get(index._shards[s].keys_of.remote(np.arange(len(keys)))) for s in live]
    assert all((ids < 3000).all() for ids, _, _ in held)  # the batch was rolled back
    owner = index.shard_of_list[index.routing_index.quantizer.assign(batch, 1)[:, 0]]
    later = batch[owner != 1]  # all on live shards: this add succeeds
    index.add(later)
    added = np.concatenate([first, later])
    held = [ray.get(index._shards[s].keys_of.remote(np.arange(len(keys)))) for s in live]
    ids = np.concatenate([h[0] for h in held])
    assert len(np.unique(ids)) == len(ids)  # every id names one key
    np.testing.assert_array_equal(np.concatenate([h[1] for h in held]), added[ids])
    D, I = index.search(test_q, 10, nprobe=NLIST, allow_partial=True)
    np.testing.assert_allclose(D, np.einsum("qd,qkd->qk", test_q, added[I]), rtol=1e-5)


@pytest.mark.parametrize(
    "codes, name, damage",
    [
        ("Flat", "shard-2.ivf", "truncate"),
        ("Flat", "shard-2.ivf", "flip"),
        ("PQ4x4", "shard-1.keys.npz", "truncate"),
    ],
)
def test_a_corrupt_shard_file_is_named_and_leaves_no_actor_running(
    data, tmp_path, codes, name, damage
):
    keys, _, _ = data
    build(keys[:2000], codes=codes).save(tmp_path / "index")
    file = tmp_path / "index" / name
    blob = bytearray(file.read_bytes())
    if damage == "truncate":
        del blob[len(blob) // 2 :]
    else:
        blob[len(blob) // 2] ^= 0xFF
    file.write_bytes(bytes(blob))
    free = ray.available_resources()["CPU"]
    # each actor holds a quarter CPU, so those left running would show; the error is kept, as
    # an interactive session keeps its last traceback (and with it the index's actor handles)
    with pytest.raises(ValueError, match=f"not a readable ShardedIVF directory: .*{name}") as e:
        ShardedIVF.load(tmp_path / "index", actor_options={"num_cpus": 0.25}, timeout_s=120)
    assert wait_for_free_cpus(free), e.value
