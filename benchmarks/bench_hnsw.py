"""AmortizedHNSW against hnswlib, faiss HNSW, usearch, voyager, Intel SVS (Vamana), ScaNN and
(with ``--methods ... ngt``) NGT, in Vespa's protocol: insertion order x ef.

    python benchmarks/bench_hnsw.py                       # GloVe 6B 50d
    python benchmarks/bench_hnsw.py --dataset wordnet     # WordNet + all-MiniLM-L6-v2, unnormalised

Keys (GloVe: 300k words) are inserted in random order, ascending norm or descending norm (ours
also streamed in 10 random batches; voyager's inner product needs descending norm, so it sorts
them itself); 2k held-out words are the queries. M = 16, ef_construction = 200, ef in {10, 20,
40, 100, 400} (SVS: degree 32, its search window at the same values; ScaNN: its own grid of leaves
searched and reorder depth). Prints recall@10 against the exact top-10, queries/s (the whole
batch, all threads, network included), build time and memory for every method, order and
setting, and writes them as JSON. The learned query transforms (random order only) are trained
on the dataset's training queries first: a KeyNet for ``--budget`` seconds, a MaxAffineNet in one
pass; the graph is searched with the predicted key for k = 10 candidates, rescored with q.
``ours-ip-edges`` adds to ours the edges ``fit_edges`` learns from all the training queries;
``...-hnswlib-links`` builds ours with hnswlib's links (``fill_lists=False``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import faiss
import numpy as np

import amips_plugins as ap
from amips_plugins.ground_truth import default_cache_dir
from amips_plugins.harness import peers
from amips_plugins.harness.datasets import builtin
from amips_plugins.harness.evaluation import sweep

METHODS = (
    "hnswlib",
    "faiss",
    "usearch",
    "voyager",
    "svs",
    "scann",
    "ngt",
    "ours-ip",
    "ours-xbox",
    "ours-ip-edges",
    "ours-ip-hnswlib-links",
    "ours-ip-edges-hnswlib-links",
    "ours-keynet",
    "ours-maxaffine",
)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=["glove50", "wordnet"], default="glove50")
    # NGT's batch search runs on one thread holding the GIL: asked for by name only
    p.add_argument(
        "--methods", nargs="+", choices=METHODS, default=[m for m in METHODS if m != "ngt"]
    )
    p.add_argument(
        "--orders",
        nargs="+",
        choices=["random", "ascending", "descending", "stream"],
        default=["random", "ascending", "descending", "stream"],
    )
    p.add_argument("--num-test", type=int, default=2000)
    p.add_argument("--budget", type=float, default=90, help="training seconds of the KeyNet")
    p.add_argument("--pieces", type=int, default=16000, help="pieces of the MaxAffineNet")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/bench_hnsw")
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)

    ds = builtin(args.dataset, seed=args.seed)
    keys, test = ds.keys, ds.test_queries[: args.num_test]
    _, true_ids = ap.ground_truth(keys, test, 10, cache_dir=default_cache_dir(), progress=False)
    print(
        f"{ds.name}: {len(keys)} keys, {len(test)} queries, d = {ds.d}; {args.threads} threads, "
        f"M 16, ef_construction 200"
    )
    norms = np.linalg.norm(keys, axis=1)
    orders = {
        "random": np.random.default_rng(args.seed).permutation(len(keys)),
        "ascending": np.argsort(norms, kind="stable"),
        "descending": np.argsort(-norms, kind="stable"),
    }
    orders["stream"] = orders["random"]
    params = (10, 20, 40, 100, 400)
    train = ds.train_queries
    transforms = {}
    if "ours-keynet" in args.methods:
        transforms["KeyNet"] = ap.KeyNet(ds.d)
        ap.fit(
            transforms["KeyNet"],
            keys,
            ds.train_queries,
            time_budget=args.budget,
            steps=100_000,
            eval_every=500,
            patience=4,
            device="cpu",
            progress=False,
        )
    if "ours-maxaffine" in args.methods:
        transforms["MaxAffineNet"] = ap.fit_max_affine(
            keys, ds.train_queries, args.pieces, num_threads=args.threads
        )
    rows = []
    for order in args.orders:
        methods = []
        if order != "stream":
            if "hnswlib" in args.methods:
                methods.append(peers.HnswlibIP(args.threads, params=params))
            if "faiss" in args.methods:
                methods.append(peers.FaissHNSW(params=params))
            if "usearch" in args.methods:
                methods.append(peers.UsearchIP(args.threads, params=params))
            if "voyager" in args.methods:  # inserts by descending norm whatever the order
                methods.append(peers.VoyagerIP(args.threads, params=params))
            if "svs" in args.methods:  # its search window plays ef's part
                methods.append(peers.SVSVamana(args.threads, params=params))
            if "scann" in args.methods:  # a tree, not a graph: the order does not matter
                methods.append(peers.ScaNN(args.threads))
            if "ngt" in args.methods:
                methods.append(peers.NGT(args.threads))
        for name, construction, fill_lists in (
            ("ours-ip", "ip", True),
            ("ours-xbox", "xbox", True),
            ("ours-ip-hnswlib-links", "ip", False),
        ):
            if name in args.methods:
                batches = 10 if order == "stream" else 1
                methods.append(
                    peers.OursHNSW(
                        args.threads,
                        construction,
                        batches=batches,
                        params=params,
                        fill_lists=fill_lists,
                    )
                )
        for fill_lists, suffix in ((True, ""), (False, "-hnswlib-links")):
            if f"ours-ip-edges{suffix}" in args.methods and order != "stream":
                methods.append(
                    peers.OursHNSW(
                        args.threads, params=params, edge_queries=train, fill_lists=fill_lists
                    )
                )
        if order == "random":
            methods += [
                peers.OursHNSW(
                    args.threads, params=params, query_transform=model, transform_name=name
                )
                for name, model in transforms.items()
            ]
        perm = orders[order]
        rank = np.empty_like(perm)
        rank[perm] = np.arange(len(perm))
        for row in sweep(methods, keys[perm], test, rank[true_ids], k=10, progress=False):
            rows.append({**row, "order": order})
            print(
                f"{order:<10} {row['method']:<40} {row['param_name']} {row['param']!s:>4}  "
                f"recall@10 {row['recall']:6.1%}  "
                f"{1e3 / row['ms_per_query']:>9.0f} queries/s  build {row['build_s']:.0f} s, "
                f"{row['memory_mb']:.0f} MB",
                flush=True,
            )
    out = Path(args.out) / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
