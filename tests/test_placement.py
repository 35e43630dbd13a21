"""How ShardedIVF places lists on shards (no Ray needed)."""

from __future__ import annotations

import numpy as np

from amips_plugins.distributed.placement import group_lists

D, NLIST, SHARDS = 16, 32, 4


def test_lists_with_nearby_centroids_share_a_shard_and_shards_are_balanced():
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((SHARDS, D))
    group = np.repeat(np.arange(SHARDS), NLIST // SHARDS)
    centroids = directions[group] + 0.05 * rng.standard_normal((NLIST, D))
    sizes = rng.integers(90, 110, NLIST)
    shard = group_lists(centroids, sizes, SHARDS)
    for g in range(SHARDS):  # each group of nearby lists on one shard
        assert len(np.unique(shard[group == g])) == 1
    load = np.bincount(shard, weights=sizes, minlength=SHARDS)
    assert load.max() <= 1.05 * sizes.sum() / SHARDS


def test_group_lists_keeps_within_capacity_when_directions_disagree():
    rng = np.random.default_rng(1)
    centroids = np.tile(rng.standard_normal((1, D)), (NLIST, 1))  # all lists alike
    centroids += 1e-3 * rng.standard_normal((NLIST, D))
    sizes = np.full(NLIST, 10)
    load = np.bincount(group_lists(centroids, sizes, SHARDS), weights=sizes, minlength=SHARDS)
    assert load.max() <= 1.05 * sizes.sum() / SHARDS
