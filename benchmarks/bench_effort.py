"""Declarative recall: our ``target_recall`` searches against every peer at the smallest fixed
setting (nprobe or ef) that meets the same target.

    python benchmarks/bench_effort.py                                # AmortizedIVF, GloVe
    python benchmarks/bench_effort.py --index hnsw                   # AmortizedHNSW, GloVe
    python benchmarks/bench_effort.py --index hnsw --dataset wordnet

A seeded 80k / 10k split of the data set's training queries: the router (IVF) is fitted on the
80k; our index is calibrated on the 10k (``calibrate``), and every peer's setting is the smallest
whose recall@10 reaches the target on them. Measured on the test queries: achieved recall@10,
queries/s in one batch (the median of three, the contenders taking turns) and one query at a
time, distances per query (NaN where the library does not count them). IVF: faiss IVF-IP, nlist
sqrt(N), and ours with one nprobe for every query (the smallest meeting the target) beside the
per-query one. HNSW: hnswlib, faiss HNSW, usearch and voyager, all inner product, M 16,
ef_construction 200, keys inserted in descending norm order (the best order for every library:
voyager's incremental transform needs it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import faiss
import numpy as np

import amips_plugins as ap
from amips_plugins._hnsw_file import insertion_order
from amips_plugins.ground_truth import default_cache_dir
from amips_plugins.harness import peers
from amips_plugins.harness.datasets import builtin
from amips_plugins.harness.evaluation import recall_at_k

TARGETS = (0.90, 0.95, 0.99)
K = 10
MAX_EF = 1000


def smallest_setting(search, queries, truth, target, low, high):
    """The smallest setting in [low, high] whose recall@K on ``queries`` reaches ``target``
    (recall grows with the setting), or None."""
    if recall_at_k(search(queries, high)[0], truth) < target:
        return None
    while low < high:
        middle = (low + high) // 2
        if recall_at_k(search(queries, middle)[0], truth) >= target:
            high = middle
        else:
            low = middle + 1
    return low


def timed(searches, test, rounds=3, single_queries=300):
    """Every search's (ids, distances per query, queries/s in one batch, median ms of one query
    alone). The searches take turns, ``rounds`` times, so that a slower spell of the machine falls
    on all of them: queries/s is the median batch's."""
    batch = {name: [] for name in searches}
    single = {name: [] for name in searches}
    results = {}
    for search in searches.values():
        search(test[:100])  # warm-up
    per_round = -(-single_queries // rounds)
    for r in range(rounds):
        for name, search in searches.items():
            start = time.perf_counter()
            results[name] = search(test)
            batch[name].append(time.perf_counter() - start)
            for i in range(r * per_round, (r + 1) * per_round):
                start = time.perf_counter()
                search(test[i : i + 1])
                single[name].append(time.perf_counter() - start)
    return {
        name: (
            *results[name],
            len(test) / statistics.median(batch[name]),
            1e3 * statistics.median(single[name]),
        )
        for name in searches
    }


def ivf_contenders(ds, keys, fit_q, calibration_q, threads):
    """Ours, calibrated, as ``search(q, target)``; the peers as (name, ``search(q, setting)``,
    the settings' range)."""
    nlist = math.isqrt(len(keys))
    ours = ap.AmortizedIVF(None, ds.d, nlist)
    ours.train(keys)
    ours.add(keys)
    ours.fit_router(fit_q)
    ours.calibrate(calibration_q, K)

    def ours_search(q, target):
        ids = ours.search(q, K, target_recall=target)[1]
        return ids, ours.last_search_stats["distances"]

    def ours_one_nprobe(q, nprobe):  # the same lists, one nprobe for every query
        ids = ours.search(q, K, params=faiss.SearchParametersIVF(nprobe=nprobe))[1]
        return ids, ours.last_search_stats["distances"]

    theirs = peers.FaissIVF(nlist)
    theirs.build(keys)
    rivals = [
        (f"{theirs.name} nprobe", lambda q, nprobe: theirs.search(q, K, nprobe), 1, nlist),
        ("ours, one nprobe", ours_one_nprobe, 1, nlist),
    ]
    return f"nlist {nlist}", ours_search, rivals


def hnsw_contenders(ds, keys, fit_q, calibration_q, threads):
    ours = ap.AmortizedHNSW("ip", ds.d)  # inserts by descending norm itself
    ours.init_index(len(keys), M=16, ef_construction=200)
    ours.add_items(keys, num_threads=threads)
    ours.calibrate(calibration_q, K, max_ef=MAX_EF, num_threads=threads)

    def ours_search(q, target):
        labels = ours.knn_query(q, K, num_threads=threads, target_recall=target)[0]
        return labels.astype(np.int64), ours.last_search_stats["distances"]

    order = insertion_order(keys)
    rivals = []
    for method in (
        peers.HnswlibIP(threads),
        peers.FaissHNSW(),
        peers.UsearchIP(threads),
        peers.VoyagerIP(threads),
    ):
        method.build(keys[order])

        def search(q, ef, method=method):
            ids, distances = method.search(q, K, ef)
            return order[ids], distances

        rivals.append((f"{method.name} ef", search, K, MAX_EF))
    return "M 16, ef_construction 200", ours_search, rivals


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--index", choices=["ivf", "hnsw"], default="ivf")
    p.add_argument("--dataset", choices=["glove50", "wordnet"], default="glove50")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--out", default="results/bench_effort")
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)

    ds = builtin(args.dataset)
    keys, test = ds.keys, ds.test_queries
    split = np.random.default_rng(0).permutation(len(ds.train_queries))
    fit_q, calibration_q = ds.train_queries[split[:80_000]], ds.train_queries[split[-10_000:]]
    truth = {
        name: ap.ground_truth(keys, q, K, cache_dir=default_cache_dir(), progress=False)[1]
        for name, q in (("calibration", calibration_q), ("test", test))
    }
    contenders = ivf_contenders if args.index == "ivf" else hnsw_contenders
    setup, ours_search, rivals = contenders(ds, keys, fit_q, calibration_q, args.threads)
    print(f"{ds.name}, {args.index} ({setup}): k {K}, {args.threads} threads")
    rows = []
    for target in TARGETS:
        searches = {"ours target_recall": lambda q, t=target: ours_search(q, t)}
        for name, search, low, high in rivals:
            setting = smallest_setting(
                search, calibration_q, truth["calibration"], target, low, high
            )
            if setting is None:
                print(f"target {target:.2f} {name}: not reached at {high}")
                continue
            searches[f"{name} {setting}"] = lambda q, s=setting, f=search: f(q, s)
        for name, (ids, distances, qps, one_ms) in timed(searches, test).items():
            row = {
                "target": target,
                "method": name,
                "recall": recall_at_k(ids, truth["test"]),
                "queries_per_s": qps,
                "single_query_ms": one_ms,
                "distances_per_query": distances,
            }
            rows.append(row)
            print(
                f"target {target:.2f} {name:38s} R@10 {row['recall']:.4f}  {qps:8.0f} q/s batch "
                f" {one_ms:.3f} ms one query  {distances:8.0f} distances/query",
                flush=True,
            )
        mine = rows[-len(searches)]
        others = rows[-len(searches) + 1 :]
        peers_only = [r for r in others if not r["method"].startswith("ours")]
        best = max(peers_only, key=lambda r: r["queries_per_s"], default=None)
        for other in others:
            label = "best peer, " if other is best else ""
            print(
                f"target {target:.2f} ours / {label}{other['method']}: queries/s "
                f"{mine['queries_per_s'] / other['queries_per_s']:.2f}, one query "
                f"{other['single_query_ms'] / mine['single_query_ms']:.2f}"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.index}_{args.dataset}.json"
    path.write_text(json.dumps(rows, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
