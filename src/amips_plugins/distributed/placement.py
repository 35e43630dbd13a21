"""Which shard holds which inverted list.

A query probes lists whose centroids lie in similar directions, so lists are grouped by
their centroids: balanced k-means over the centroids, each list weighted by its size, so that
a query's lists tend to share a shard and every shard holds about as many keys.
"""

from __future__ import annotations

import numpy as np

__all__ = ["group_lists", "lists_on_first_shards"]

_ROUNDS = 20
_SLACK = 1.05  # a shard may hold this much more than an equal share of the keys


def group_lists(centroids: np.ndarray, sizes: np.ndarray, num_shards: int, seed: int = 0):
    """The shard of every list, (nlist,) int64 in 0 .. num_shards - 1: lists with nearby
    (unit-normalised) centroids together, each shard within 5% of an equal share of ``sizes``
    where the lists' sizes allow it."""
    directions = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-30)
    weights = np.maximum(sizes.astype(np.float64), 1.0)  # empty lists still need a place
    capacity = max(_SLACK * weights.sum() / num_shards, weights.max())
    rng = np.random.default_rng(seed)
    centers = directions[rng.choice(len(directions), num_shards, replace=False)]
    shard = np.zeros(len(directions), np.int64)
    for _ in range(_ROUNDS):
        shard = _assign_within_capacity(directions @ centers.T, weights, capacity)
        for s in range(num_shards):
            members = shard == s
            if members.any():
                center = (weights[members, None] * directions[members]).sum(axis=0)
                centers[s] = center / max(np.linalg.norm(center), 1e-30)
    return shard


def _assign_within_capacity(affinity: np.ndarray, weights: np.ndarray, capacity: float):
    """Greedy: (list, shard) pairs from the most to the least affine, each list to the first
    shard with room; a list that fits nowhere goes to the least-loaded shard."""
    num_lists, num_shards = affinity.shape
    shard = np.full(num_lists, -1, np.int64)
    load = np.zeros(num_shards)
    for flat in np.argsort(-affinity, axis=None, kind="stable"):
        c, s = divmod(int(flat), num_shards)
        if shard[c] < 0 and load[s] + weights[c] <= capacity:
            shard[c], load[s] = s, load[s] + weights[c]
    for c in np.flatnonzero(shard < 0):
        s = int(np.argmin(load))
        shard[c], load[s] = s, load[s] + weights[c]
    return shard


def lists_on_first_shards(
    ranked: np.ndarray, shard_of_list: np.ndarray, num_shards: int, nprobe: int, max_shards: int
) -> np.ndarray:
    """Per query, the first ``nprobe`` of its ``ranked`` lists (n, depth; -1: none) held by the
    ``max_shards`` shards whose best list comes first: (n, nprobe), -1 where fewer remain."""
    n, depth = ranked.shape
    owner = np.where(ranked >= 0, shard_of_list[np.maximum(ranked, 0)], num_shards)
    rows = np.arange(n)[:, None]
    first_seen = np.full((n, num_shards + 1), depth)  # the last: "no list"
    for s in range(num_shards):
        held = owner == s
        first_seen[:, s] = np.where(held.any(axis=1), held.argmax(axis=1), depth)
    shard_rank = np.argsort(np.argsort(first_seen, axis=1, kind="stable"), axis=1)
    kept = (shard_rank[rows, owner] < max_shards) & (ranked >= 0)
    order = np.argsort(~kept, axis=1, kind="stable")[:, :nprobe]
    lists = np.take_along_axis(ranked, order, axis=1)
    lists[~np.take_along_axis(kept, order, axis=1)] = -1
    return lists
