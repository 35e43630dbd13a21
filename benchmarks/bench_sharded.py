"""ShardedIVF on a local Ray cluster: shards contacted per query against match rate.

    python benchmarks/bench_sharded.py              # GloVe 6B 50d over 8 shards
    python benchmarks/bench_sharded.py --record     # also write benchmarks/results/sharded.json

One index per placement on the same keys and the same trained quantizer (GloVe: 300k keys,
nlist = 547, 90k training queries, 10k test queries): each list on one shard (lists grouped by
centroid) with the learned max-affine router; the same with faiss's centroids as the router;
and keys dealt out over every shard (broadcast: every query contacts every shard) with the
router. Per nprobe: top-1 match rate, recall@10, shards contacted per query, distances, and the
batch's wall-clock split into routing, remote calls (the shards' scans inside), and merging.
Every result is checked against one AmortizedIVF probing the same lists.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import ray

import amips_plugins as ap
from amips_plugins.distributed import ShardedIVF
from amips_plugins.ground_truth import default_cache_dir
from amips_plugins.harness.datasets import builtin
from amips_plugins.harness.evaluation import match_rate, recall_at_k

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--keys", type=int, help="use the first this many keys (default: all)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 27])
    p.add_argument(
        "--max-shards",
        type=int,
        nargs="+",
        default=[1, 2],
        help="also search the routed index contacting at most this many shards per query",
    )
    p.add_argument("--num-test", type=int, default=10_000)
    p.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--record", action="store_true", help="write benchmarks/results/sharded.json")
    args = p.parse_args()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.ERROR)

    ds = builtin("glove50")
    keys, train_q, test_q = ds.keys[: args.keys], ds.train_queries, ds.test_queries[: args.num_test]
    nlist = math.isqrt(len(keys))
    _, true_ids = ap.ground_truth(keys, test_q, 10, cache_dir=default_cache_dir(), progress=False)
    print(
        f"{ds.name}: {len(keys)} keys, nlist {nlist}, {args.shards} shards on a local Ray "
        f"cluster of {args.cpus} CPUs ({record.cpu_model()}), ray {ray.__version__}"
    )

    indexes = {}
    for name, placement, learned in (
        ("lists + router", "lists", True),
        ("lists + centroids", "lists", False),
        ("broadcast + router", "keys", True),
    ):
        start = time.perf_counter()
        index = ShardedIVF(ds.d, nlist, args.shards, placement=placement)
        index.train(keys)
        index.add(keys)
        built = time.perf_counter() - start
        if learned:
            index.fit_router(train_q)
        fitted = time.perf_counter() - start - built
        print(
            f"{name}: built in {built:.1f} s (shard sizes {index.shard_sizes()}), "
            f"router fitted in {fitted:.1f} s"
        )
        indexes[name] = index

    singles = {name: _single_machine(index, keys) for name, index in indexes.items()}
    runs = [("lists + router", None), *(("lists + router", m) for m in args.max_shards)]
    runs += [("lists + centroids", None), ("broadcast + router", None)]
    rows = []
    for nprobe in args.nprobe:
        for name, max_shards in runs:
            index = indexes[name]
            index.search(test_q[:100], 10, nprobe=nprobe, max_shards=max_shards)  # warm up
            start = time.perf_counter()
            D, I = index.search(test_q, 10, nprobe=nprobe, max_shards=max_shards)
            wall = time.perf_counter() - start
            stats = index.last_search_stats
            lists = index.probed_lists(test_q, nprobe=nprobe, max_shards=max_shards)
            D1, I1 = singles[name].search_lists(test_q, 10, lists)
            if not _same_results(D, I, D1, I1):
                raise SystemExit(f"{name} nprobe {nprobe}: differs from one AmortizedIVF")
            if max_shards is not None:
                name = f"{name}, <= {max_shards} shards"
            rows.append(
                {
                    "method": name,
                    "nprobe": nprobe,
                    "lists": stats["lists_probed"],
                    "top1": match_rate(I, true_ids[:, 0]),
                    "recall10": recall_at_k(I, true_ids),
                    "shards": stats["shards_contacted"],
                    "distances": stats["distances"],
                    "ms_per_query": 1e3 * wall / len(test_q),
                    "routing_ms": 1e3 * stats["routing_s"],
                    "remote_ms": 1e3 * stats["remote_s"],
                    "shard_scan_ms": 1e3 * stats["shard_scan_s"],
                    "merge_ms": 1e3 * stats["merge_s"],
                }
            )
            r = rows[-1]
            print(
                f"{name:30s} nprobe {nprobe:3d} ({r['lists']:.1f} lists): "
                f"top-1 {r['top1']:.1%} R@10 {r['recall10']:.1%} "
                f"shards {r['shards']:.2f} distances {r['distances']:.0f} | batch "
                f"{wall * 1e3:.0f} ms = routing {r['routing_ms']:.0f} + remote "
                f"{r['remote_ms']:.0f} (slowest shard's scan {r['shard_scan_ms']:.0f}) + merge "
                f"{r['merge_ms']:.0f}"
            )
    print(
        "every result equals one AmortizedIVF's search_lists at the same lists (ids in the same "
        "order, up to their order among equal scores)"
    )
    if args.record:
        record.write(
            "sharded",
            f"ShardedIVF: GloVe over {args.shards} shards (local Ray cluster)",
            rows,
            [
                ("method", "placement + router", ""),
                ("nprobe", "nprobe", "d"),
                ("lists", "lists / query", ".1f"),
                ("top1", "top-1", ".1%"),
                ("recall10", "R@10", ".1%"),
                ("shards", "shards / query", ".2f"),
                ("distances", "distances / query", ".0f"),
                ("ms_per_query", "ms / query (batch)", ".3f"),
                ("routing_ms", "routing ms", ".0f"),
                ("remote_ms", "remote ms", ".0f"),
                ("merge_ms", "merge ms", ".0f"),
            ],
            f"{len(test_q)} test queries in one batch; {args.cpus} CPUs shared by all shards.",
        )


def _same_results(D, I, D1, I1) -> bool:
    """Equal scores, and equal ids up to their order among equal scores (keys dealt over shards
    can tie: GloVe holds duplicate vectors)."""
    if not np.array_equal(D, D1):
        return False
    order, order1 = np.lexsort((I, -D)), np.lexsort((I1, -D1))
    return np.array_equal(np.take_along_axis(I, order, 1), np.take_along_axis(I1, order1, 1))


def _single_machine(sharded: ShardedIVF, keys: np.ndarray):
    """One AmortizedIVF with the sharded index's quantizer and router, holding every key."""
    index = ap.AmortizedIVF.from_faiss(faiss.clone_index(sharded.routing_index))
    index.add(keys)
    index.router = sharded.router
    return index


if __name__ == "__main__":
    main()
