"""The questions faiss's and hnswlib's trackers ask about inner-product search, measured on GloVe.

    python benchmarks/bench_practice.py                  # GloVe 6B 50d, a few minutes on 2 cores
    python benchmarks/bench_practice.py --parts norms ivf

Figures only, no timings (recall and list sizes do not depend on the machine's load). GloVe 6B
50d split as everywhere in benchmarks/: 300k keys, 90k training words, 10k held-out test words.
Parts:

- ``norms``: is a key its own best match (sampled keys as queries), and how large the answers'
  norms are (where the exact top-1 answers fall among the keys' norms);
- ``normalise``: what searching normalised vectors loses: the exact top-10 by cosine (keys
  normalised; what an L2 or cosine index returns at best) against the exact top-10 by inner
  product (hnswlib#74, #208, #570; faiss#1934);
- ``hnsw``: hnswlib's 'ip' space, recall@10 at several ef, keys inserted in random order
  against descending norm (what AmortizedHNSW does to every batch);
- ``ivf``: faiss IVF with inner product (nlist 547), the list sizes after k-means with plain
  inner-product centroids (faiss#1496), after spherical k-means (faiss's default for
  METRIC_INNER_PRODUCT, and AmortizedIVF's), and after L2 k-means of the Xbox-augmented keys
  (``AmortizedIVF(..., xbox=True)``); then recall@10, top-1 and the keys scanned per query at
  several nprobe for each, and for AmortizedIVF after ``fit_router()``.
"""

from __future__ import annotations

import argparse
import os

import faiss
import numpy as np

import amips_plugins as ap
from amips_plugins.ground_truth import default_cache_dir
from amips_plugins.harness.datasets import glove50

PARTS = ("norms", "normalise", "hnsw", "ivf")


def recall_at(found: np.ndarray, true_ids: np.ndarray) -> float:
    """Mean share of each row of ``true_ids`` (n, k) found in the row of ``found`` (n, >= k)."""
    hits = (found[:, :, None] == true_ids[:, None, :]).any(axis=1)
    return float(hits.mean())


def part_norms(keys, test, true_ids, args):
    rng = np.random.default_rng(args.seed)
    sample = rng.choice(len(keys), 10_000, replace=False)
    _, best = ap.topk_dot(keys[sample], keys, 1)
    own = float((best[:, 0] == sample).mean())
    print(f"keys that are their own best match (10,000 sampled keys as queries): {own:.1%}")
    norms = np.linalg.norm(keys, axis=1)
    rank = np.argsort(np.argsort(-norms)) / len(keys)  # 0: the largest norm
    top1 = rank[true_ids[:, 0]]
    print(
        f"norms of the keys: median {np.median(norms):.2f}, 1st-99th percentile "
        f"{np.percentile(norms, 1):.2f}-{np.percentile(norms, 99):.2f}"
    )
    for share in (0.01, 0.10):
        print(
            f"test queries whose best key is among the {share:.0%} largest-norm keys: "
            f"{(top1 < share).mean():.1%}"
        )


def part_normalise(keys, test, true_ids, args):
    unit = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    _, cos_ids = ap.topk_dot(test, unit, 10)
    print(
        f"exact top-10 by cosine (normalised keys) against the exact top-10 by inner product: "
        f"recall@10 {recall_at(cos_ids, true_ids):.1%}, top-1 "
        f"{(cos_ids[:, 0] == true_ids[:, 0]).mean():.1%}"
    )


def part_hnsw(keys, test, true_ids, args):
    import hnswlib

    test, true_ids = test[: args.hnsw_queries], true_ids[: args.hnsw_queries]
    norms = np.linalg.norm(keys, axis=1)
    orders = {
        "random": np.random.default_rng(args.seed).permutation(len(keys)),
        "descending norm": np.argsort(-norms, kind="stable"),
    }
    print(f"hnswlib 'ip', M 16, ef_construction 200, {len(test)} test queries, recall@10:")
    for name, order in orders.items():
        index = hnswlib.Index(space="ip", dim=keys.shape[1])
        index.init_index(len(keys), M=16, ef_construction=200, random_seed=100)
        index.add_items(keys[order], order, num_threads=args.threads)
        cells = []
        for ef in args.ef:
            index.set_ef(ef)
            labels, _ = index.knn_query(test, k=10, num_threads=args.threads)
            cells.append(f"ef {ef}: {recall_at(labels.astype(np.int64), true_ids):.1%}")
        print(f"  {name:<16} " + ", ".join(cells))


def list_sizes(index) -> np.ndarray:
    return np.array([index.invlists.list_size(c) for c in range(index.nlist)], np.int64)


def part_ivf(keys, test, true_ids, args, train):
    d, nlist = keys.shape[1], args.nlist
    built = {}
    plain = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    plain.cp.spherical = False  # faiss#1496: centroids are means, assignment by inner product
    plain.cp.seed = args.seed
    plain.train(keys)
    plain.add(keys)
    built["IP k-means (plain centroids)"] = plain
    spherical = ap.AmortizedIVF(None, d, nlist)  # faiss's default for IP: cp.spherical = True
    spherical.cp.seed = args.seed
    spherical.train(keys)
    spherical.add(keys)
    built["spherical k-means (faiss's IP default; AmortizedIVF's)"] = spherical
    xbox = ap.AmortizedIVF(None, d, nlist, xbox=True)
    xbox.cp.seed = args.seed
    xbox.train(keys)
    xbox.add(keys)
    built["Xbox-L2 k-means (AmortizedIVF xbox=True)"] = xbox
    top = max(1, nlist // 100)
    print(f"IVF, nlist {nlist}, {len(keys)} keys: list sizes")
    for name, index in built.items():
        sizes = np.sort(list_sizes(index))[::-1]
        print(
            f"  {name:<54} largest 1% of lists ({top}) hold {sizes[:top].sum() / len(keys):5.1%} "
            f"of the keys; largest list {sizes[0]}; empty lists {(sizes == 0).sum()}"
        )
    print(
        f"IVF search, {len(test)} test queries: recall@10 / top-1 / keys scanned per query, "
        f"at nprobe {args.nprobe}"
    )
    for name, index in built.items():  # no learned part yet: faiss's own choice of lists
        print(f"  {name:<54} " + ivf_cells(index, test, true_ids, args.nprobe))
    report = spherical.fit_router(train, num_threads=args.threads)
    name = "spherical k-means + fit_router()"
    print(f"  {name:<54} " + ivf_cells(spherical, test, true_ids, args.nprobe))
    print(f"  (fit_router() chose {report[0]['router']}, nprobe {spherical.nprobe})")


def ivf_cells(index, test, true_ids, nprobes) -> str:
    cells = []
    for nprobe in nprobes:
        faiss.cvar.indexIVF_stats.reset()
        _, ids = index.search(test, 10, params=faiss.SearchParametersIVF(nprobe=nprobe))
        scanned = faiss.cvar.indexIVF_stats.ndis / len(test)
        top1 = (ids[:, 0] == true_ids[:, 0]).mean()
        cells.append(f"{nprobe}: {recall_at(ids, true_ids):.1%} / {top1:.1%} / {scanned:,.0f}")
    return ", ".join(cells)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--ef", type=int, nargs="+", default=[10, 40, 100, 400])
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 8, 27])
    p.add_argument("--nlist", type=int, default=547)
    p.add_argument("--hnsw-queries", type=int, default=2000)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)

    ds = glove50(seed=args.seed)
    keys, test = ds.keys, ds.test_queries
    _, true_ids = ap.ground_truth(keys, test, 10, cache_dir=default_cache_dir(), progress=False)
    print(
        f"{ds.name}: {len(keys)} keys, {len(ds.train_queries)} training and {len(test)} test "
        f"queries, d = {ds.d}; {args.threads} threads, faiss {faiss.__version__}"
    )
    if "norms" in args.parts:
        part_norms(keys, test, true_ids, args)
    if "normalise" in args.parts:
        part_normalise(keys, test, true_ids, args)
    if "hnsw" in args.parts:
        part_hnsw(keys, test, true_ids, args)
    if "ivf" in args.parts:
        part_ivf(keys, test, true_ids, args, ds.train_queries)


if __name__ == "__main__":
    main()
