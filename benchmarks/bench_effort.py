"""Declarative recall: our ``target_recall`` searches against every peer at the smallest fixed
setting (nprobe or ef) that meets the same target.

    python benchmarks/bench_effort.py                                # AmortizedIVF, GloVe
    python benchmarks/bench_effort.py --index hnsw                   # AmortizedHNSW, GloVe
    python benchmarks/bench_effort.py --index hnsw --dataset wordnet
    python benchmarks/bench_effort.py --index hnsw --keys 6700      # a small catalogue

A seeded 80k / 10k split of the data set's training queries: the router (IVF) is fitted on the 80k;
our index is calibrated on the 10k (``calibrate``), and every peer's setting is the smallest whose
recall@10 reaches the target on them. Measured on the test queries: achieved recall@10, queries/s in
one batch (the median of three, the contenders taking turns) and one query at a time, distances per
query (NaN where the library does not count them), and each index's build time and memory (growth of
this process's resident memory over its build, each end measured with the C heap's free pages handed
back; ours includes fitting and calibrating). IVF (nlist sqrt(N)): faiss IVF-IP, faiss IVF-PQ
fast-scan + exact refine at k_factor 4 / 16 / 64 / 256, ScaNN (tree of 2 sqrt(N) leaves, anisotropic
hashing, reorder 100 / 300 / 1000 / 2000), and ours three times: over exact lists (with one nprobe
for every query beside the per-query one), over lists of float16 keys (``"IVF{nlist},SQfp16"``,
residuals from the lists' centroids, scanned on the core as the exact ones), and over the
fast-scan peer's codes re-ranked from float16 raw keys (``"IVF{nlist},PQ{d/2}x4fs,Refine(SQfp16)"``:
half the memory of float32 ones, at the same speed and within 0.0002 of their recall on WordNet +
MiniLM; target_recall chooses nprobe and the re-ranking depth). HNSW: hnswlib, faiss HNSW,
usearch and voyager (M 16, ef_construction 200, keys inserted by descending norm: the best order
for every library, and voyager's transform needs it),
SVS Vamana (degree 32, window 200), ScaNN, and with ``--ngt`` NGT (epsilon; its batch search runs on
one thread holding the GIL, so finding its settings takes hours on GloVe); ours twice: the plain
graph, and with edges learned from the 80k (``fit_edges``). A peer with two knobs is one contender
per value of the second (``pip install ".[peers]"`` installs them). ``--keys N``: a seeded sample of
N of the keys, a small catalogue such as a recommender's, where one query's fixed cost (the Python
path, the call into each library) is most of its time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

import amips_plugins as ap
from amips_plugins._hnsw_file import insertion_order
from amips_plugins.ground_truth import default_cache_dir
from amips_plugins.harness import peers
from amips_plugins.harness.datasets import builtin
from amips_plugins.harness.evaluation import built, recall_at_k

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402

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


class Rival:
    """A peer at one setting of its other knobs: ``search(q, setting)`` for settings in
    [low, high], ``low`` to ``high`` ascending in effort; ``knob(setting)`` the library's value."""

    def __init__(self, name, search, low, high, build_s, memory_mb, knob=lambda s: s):
        self.name, self.search, self.low, self.high = name, search, low, high
        self.build_s, self.memory_mb, self.knob = build_s, memory_mb, knob


def peer_rivals(method, keys, ladder, low, high, order=None):
    """``method`` (a ``harness.peers`` method) built on ``keys`` (in ``order``), one Rival per
    entry of ``ladder``: (label, (setting -> the method's param), knob)."""
    keys_in = keys if order is None else keys[order]
    build_s, memory_mb = built(lambda: method.build(keys_in))
    print(f"{method.name}: built in {build_s:.1f} s, {memory_mb:.0f} MB", flush=True)
    rivals = []
    for label, param, knob in ladder:

        def search(q, setting, param=param):
            ids, distances = method.search(q, K, param(setting))
            return (ids if order is None else order[ids]), distances

        rivals.append(Rival(f"{method.name}{label}", search, low, high, build_s, memory_mb, knob))
    return rivals


def ivf_contenders(ds, keys, fit_q, calibration_q, threads, with_ngt=False):
    """Ours, calibrated, as {name: (search(q, target), build s, memory MB)}: over exact lists
    and over fast-scan codes re-ranked from float16 raw keys; the peers as Rivals."""
    nlist = math.isqrt(len(keys))
    exact = ap.AmortizedIVF(None, ds.d, nlist)
    compressed = ap.AmortizedIVF.from_factory(
        ds.d, f"IVF{nlist},{compressed_codes(ds.d)},Refine(SQfp16)"
    )
    halves = ap.AmortizedIVF.from_factory(ds.d, f"IVF{nlist},SQfp16")
    ours, rivals = {}, []
    variants = (
        ("", exact),
        (", SQfp16 lists", halves),
        (f", {compressed_codes(ds.d)} + re-rank", compressed),
    )
    for name, index in variants:

        def build(index=index):
            index.train(keys)
            index.add(keys)
            # the raw keys given: float16 lists cannot give them back exactly
            index.fit_router(fit_q, keys=keys)
            index.calibrate(calibration_q, K, keys=keys)

        build_s, memory_mb = built(build)
        print(f"ours{name}: {index}", flush=True)

        def ours_search(q, target, index=index):
            ids = index.search(q, K, target_recall=target)[1]
            return ids, index.last_search_stats["distances"]

        def ours_one_nprobe(q, nprobe, index=index):  # the same lists, one nprobe for every query
            ids = index.search(q, K, params=faiss.SearchParametersIVF(nprobe=nprobe))[1]
            return ids, index.last_search_stats["distances"]

        ours[f"ours{name} target_recall"] = (ours_search, build_s, memory_mb)
        if index is exact:
            rivals.append(Rival("ours, one nprobe", ours_one_nprobe, 1, nlist, build_s, memory_mb))
    rivals += peer_rivals(peers.FaissIVF(nlist), keys, [(" nprobe", int, int)], 1, nlist)
    rivals += peer_rivals(
        peers.FaissIVFFastScanRefine(nlist),
        keys,
        [(f" k_factor {f}, nprobe", lambda s, f=f: (s, f), int) for f in (4, 16, 64, 256)],
        1,
        nlist,
    )
    rivals += scann_rivals(threads, keys)
    return f"nlist {nlist}", ours, rivals


def compressed_codes(d: int) -> str:
    """The compressed lists measured beside the exact ones: faiss's fast-scan PQ of 4 bits per
    two dimensions (the fast-scan peer's codes)."""
    return f"PQ{d // 2}x4fs"


def scann_rivals(threads, keys):
    """ScaNN at each re-ordering depth, its leaves searched the knob."""
    scann = peers.ScaNN(threads)
    leaves = max(1, round(2 * math.sqrt(len(keys))))
    ladder = [(f" reorder {r}, leaves", lambda s, r=r: (s, r), int) for r in (100, 300, 1000, 2000)]
    return peer_rivals(scann, keys, ladder, 1, leaves)


def hnsw_contenders(ds, keys, fit_q, calibration_q, threads, with_ngt=False):
    ours = {}
    for name, edge_queries in (("", None), (", learned edges", fit_q)):
        graph = ap.AmortizedHNSW("ip", ds.d)  # inserts by descending norm itself

        def build(graph=graph, edge_queries=edge_queries):
            graph.init_index(len(keys), M=16, ef_construction=200)
            graph.add_items(keys, num_threads=threads)
            if edge_queries is not None:
                graph.fit_edges(edge_queries, num_threads=threads)
            graph.calibrate(calibration_q, K, max_ef=MAX_EF, num_threads=threads)

        def ours_search(q, target, graph=graph):
            labels = graph.knn_query(q, K, num_threads=threads, target_recall=target)[0]
            return labels.astype(np.int64), graph.last_search_stats["distances"]

        ours[f"ours target_recall{name}"] = (ours_search, *built(build))

    order = insertion_order(keys)
    rivals = []
    for method in (
        peers.HnswlibIP(threads),
        peers.FaissHNSW(),
        peers.UsearchIP(threads),
        peers.VoyagerIP(threads),
        peers.SVSVamana(threads),
    ):
        rivals += peer_rivals(method, keys, [(" ef", int, int)], K, MAX_EF, order)
    if with_ngt:  # its batch search runs on one thread, holding the GIL: hours on GloVe
        epsilon = [(" epsilon", lambda s: s / 1000, lambda s: s / 1000)]  # steps of 0.001
        rivals += peer_rivals(peers.NGT(threads), keys, epsilon, 0, 500)
    rivals += scann_rivals(threads, keys)
    return "M 16, ef_construction 200", ours, rivals


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--index", choices=["ivf", "hnsw"], default="ivf")
    p.add_argument("--dataset", choices=["glove50", "wordnet"], default="glove50")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--out", default="results/bench_effort")
    p.add_argument("--record", action="store_true", help="write benchmarks/results/effort_*.json")
    p.add_argument("--ngt", action="store_true", help="also NGT (hnsw; slow: one thread)")
    p.add_argument("--keys", type=int, help="a seeded sample of this many keys (default: all)")
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)

    ds = builtin(args.dataset)
    keys, test, data_name = ds.keys, ds.test_queries, ds.name
    if args.keys is not None and args.keys < len(keys):
        sample = np.random.default_rng(0).choice(len(keys), args.keys, replace=False)
        keys, data_name = keys[np.sort(sample)], f"{ds.name.split('-')[0]}-{args.keys}"
    split = np.random.default_rng(0).permutation(len(ds.train_queries))
    fit_q, calibration_q = ds.train_queries[split[:80_000]], ds.train_queries[split[-10_000:]]
    truth = {
        name: ap.ground_truth(keys, q, K, cache_dir=default_cache_dir(), progress=False)[1]
        for name, q in (("calibration", calibration_q), ("test", test))
    }
    contenders = ivf_contenders if args.index == "ivf" else hnsw_contenders
    setup, ours, rivals = contenders(ds, keys, fit_q, calibration_q, args.threads, args.ngt)
    print(f"{data_name}, {args.index} ({setup}): k {K}, {args.threads} threads")
    for name, (_, build_s, memory_mb) in ours.items():
        print(f"{name}: built, fitted and calibrated in {build_s:.1f} s, {memory_mb:.0f} MB")
    rows = []
    for target in TARGETS:
        searches = {}
        for name, (search, build_s, memory_mb) in ours.items():
            try:
                search(calibration_q[:1], target)
            except ValueError as e:  # above its calibrated maximum
                print(f"target {target:.2f} {name}: {e}")
                continue
            searches[name] = (lambda q, t=target, f=search: f(q, t), build_s, memory_mb)
        for rival in rivals:
            setting = smallest_setting(
                rival.search, calibration_q, truth["calibration"], target, rival.low, rival.high
            )
            if setting is None:
                print(f"target {target:.2f} {rival.name}: not reached at {rival.knob(rival.high)}")
                continue
            searches[f"{rival.name} {rival.knob(setting)}"] = (
                lambda q, s=setting, f=rival.search: f(q, s),
                rival.build_s,
                rival.memory_mb,
            )
        timings = timed({name: search for name, (search, _, _) in searches.items()}, test)
        for name, (ids, distances, qps, one_ms) in timings.items():
            row = {
                "target": target,
                "method": name,
                "recall": recall_at_k(ids, truth["test"]),
                "queries_per_s": qps,
                "single_query_ms": one_ms,
                "distances_per_query": distances,
                "build_s": searches[name][1],
                "memory_mb": searches[name][2],
            }
            rows.append(row)
            print(
                f"target {target:.2f} {name:52s} R@10 {row['recall']:.4f}  {qps:8.0f} q/s batch "
                f" {one_ms:.3f} ms one query  {distances:8.0f} distances/query",
                flush=True,
            )
        block = rows[-len(searches) :]
        peers_only = [r for r in block if not r["method"].startswith("ours")]
        best = max(peers_only, key=lambda r: r["queries_per_s"], default=None)
        best_one = min(peers_only, key=lambda r: r["single_query_ms"], default=None)
        for mine in (r for r in block if r["method"].startswith("ours")):
            for other, label in ((best, "best peer"), (best_one, "fastest one query")):
                if other is not None:
                    print(
                        f"target {target:.2f} {mine['method']} / {label}, {other['method']}: "
                        f"queries/s {mine['queries_per_s'] / other['queries_per_s']:.2f}, "
                        f"one query {other['single_query_ms'] / mine['single_query_ms']:.2f}"
                    )
    stem = f"{args.index}_{args.dataset}" + ("" if data_name == ds.name else f"_{len(keys)}")
    if args.record:
        title = f"Declared recall against every peer: {args.index}, {data_name}"
        record.write(f"effort_{stem}", title, rows, COLUMNS, NOTES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    path.write_text(json.dumps(rows, indent=1))
    print(f"wrote {path}")


NOTES = (
    "Memory is the growth of this process's resident memory over each index's build, in turn, "
    "each end measured after a garbage collection with the C heap's free pages handed back "
    "(glibc's malloc_trim), so that no index is credited with memory an earlier one freed; the "
    "allocator's per-thread caches still count. Ours includes its fit and calibration."
)
COLUMNS = [
    ("target", "target", ".2f"),
    ("method", "method and setting", ""),
    ("recall", "R@10", ".4f"),
    ("queries_per_s", "queries/s (batch)", ".0f"),
    ("single_query_ms", "ms, one query", ".3f"),
    ("distances_per_query", "distances / query", ".0f"),
    ("build_s", "build s", ".1f"),
    ("memory_mb", "memory MB", ".0f"),
]


if __name__ == "__main__":
    main()
