"""Learned support functions on GloVe 6B 50d: key recovery, relative error, routing accuracy.

    python benchmarks/bench_learned.py                  # 3 minutes of training per model
    python benchmarks/bench_learned.py --budget 600     # the 10-minute budget of the goal
    python benchmarks/bench_learned.py --models maxaffine maxaffine-router   # the one-pass models

300k keys, 90k training words, 10k held-out test words (seeded split). For key predictors:
key recovery (the L2-nearest key of the predicted key is the exact MIPS answer; q itself is the
baseline) and relative error |k^ - k*|^2 / |q - k*|^2 (1.0 for q itself). For routers over a faiss
IVF (nlist 547): routing accuracy, the list holding the best key ranked first / within the top 27
(5%), against faiss's own ranking by centroid inner product. Every row reports parameters,
multiply-adds per query and training time. The max-affine models are fitted in one pass (the keys
that answer the most training queries become pieces), not by gradient steps.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import faiss
import numpy as np
import torch

import amips_plugins as ap
from amips_plugins import harness
from amips_plugins.ground_truth import default_cache_dir, segment_ground_truth
from amips_plugins.learn.training import key_recovery, relative_key_error, routing_accuracy
from amips_plugins.routing import MaxAffineRouter


def calibrated_steps(model, budget, fit_kwargs):
    """Steps that fit in ``budget`` seconds, from a short timed run on a copy."""
    trial = copy.deepcopy(model)
    history = ap.fit(trial, **fit_kwargs, steps=60, eval_every=10**9, progress=False)
    return max(100, int(0.9 * budget * history[-1]["step"] / history[-1]["seconds"]))


def train(model, budget, **fit_kwargs):
    steps = calibrated_steps(model, budget, fit_kwargs)
    history = ap.fit(
        model, **fit_kwargs, steps=steps, eval_every=max(100, steps // 10), time_budget=budget
    )
    return history[-1]


def ivf_lists(keys, nlist, threads):
    """faiss IVF over the keys: the key order grouping them by list, the list offsets and the
    quantizer."""
    faiss.omp_set_num_threads(threads)
    quantizer = faiss.IndexFlatIP(keys.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, keys.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(keys)
    ivf.add(keys)
    lists = [
        faiss.rev_swig_ptr(ivf.invlists.get_ids(c), ivf.invlists.list_size(c)).copy()
        for c in range(nlist)
    ]
    order = np.concatenate(lists)
    offsets = np.concatenate([[0], np.cumsum([len(ids) for ids in lists])])
    return order, offsets, quantizer


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--budget", type=float, default=180, help="training seconds per model")
    models = ["keynet", "supportnet", "supportnet-hom", "maxaffine", "router", "maxaffine-router"]
    p.add_argument("--models", nargs="+", default=models, choices=models)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--router-width", type=int, default=384)
    p.add_argument("--pieces", type=int, default=16000, help="pieces of the MaxAffineNet")
    p.add_argument(
        "--router-macs", type=int, default=500_000, help="multiply-adds of the max-affine router"
    )
    p.add_argument("--augment", type=int, default=0, help="noisy copies of every training query")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cache = default_cache_dir()

    ds = harness.glove50(seed=args.seed)
    keys, train_q, test_q = ds.keys, ds.train_queries, ds.test_queries
    true = ap.compute_targets(keys, test_q, cache_dir=cache)
    fit_kwargs = dict(
        keys=keys,
        queries=train_q,
        augment_copies=args.augment,
        cache_dir=cache,
        device="cpu",
        seed=args.seed,
        num_threads=args.threads,
    )
    print(
        f"{ds}; {args.threads} threads, {args.budget:.0f} s of training per model, "
        f"torch {torch.__version__}"
    )
    header = (
        f"{'model':<34} {'params':>9} {'MACs/query':>10} {'train s':>8} {'steps':>6} | "
        f"{'key recovery':>12} {'rel. error':>10} | {'route@1':>8} {'route@27':>8}"
    )
    print(header)
    print("-" * len(header))

    def key_row(name, model, last):
        pred = ap.QueryTransform(model).keys(test_q)
        rec = key_recovery(pred, keys, true.ids, num_threads=args.threads)
        err = relative_key_error(pred, test_q, keys, true.ids)
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{name:<34} {params:>9} {model.key_multiply_adds():>10} {last['seconds']:>8.0f} "
            f"{last['step']:>6} | {rec:>12.1%} {err:>10.3f} |",
            flush=True,
        )

    rec_q = key_recovery(test_q, keys, true.ids, num_threads=args.threads)
    print(
        f"{'q itself (no model)':<34} {0:>9} {0:>10} {0:>8} {0:>6} | {rec_q:>12.1%} {1.0:>10.3f} |"
    )
    torch.manual_seed(args.seed)
    if "keynet" in args.models:
        model = ap.KeyNet(ds.d, width=args.width, depth=3)
        key_row(f"KeyNet residual {args.width}x3", model, train(model, args.budget, **fit_kwargs))
    for hom in (False, True):
        if ("supportnet-hom" if hom else "supportnet") in args.models:
            model = ap.SupportNet(ds.d, width=args.width, depth=3, homogeneous=hom)
            name = f"SupportNet {args.width}x3{' homogeneous' if hom else ''}"
            key_row(name, model, train(model, args.budget, **fit_kwargs))
    if "maxaffine" in args.models:
        start = time.perf_counter()
        model = ap.fit_max_affine(keys, train_q, args.pieces, num_threads=args.threads)
        name = f"MaxAffineNet {len(model.pieces)} pieces t={model.temperature:g}"
        key_row(name, model, {"seconds": time.perf_counter() - start, "step": 0})

    if {"router", "maxaffine-router"} & set(args.models):
        nlist = 547
        order, offsets, quantizer = ivf_lists(keys, nlist, args.threads)
        grouped = keys[order]
        truth = segment_ground_truth(grouped, test_q, offsets, cache_dir=cache, progress=False)[0]
        top = round(0.05 * nlist)
        _, ranked = quantizer.search(test_q, nlist)
        centroid_scores = np.empty((len(test_q), nlist), np.float32)
        np.put_along_axis(
            centroid_scores, ranked, -np.arange(nlist, dtype=np.float32)[None], axis=1
        )
        print(
            f"{'faiss IVF ranking (centroid IP)':<34} {nlist * ds.d:>9} {nlist * ds.d:>10} "
            f"{0:>8} {0:>6} | "
            f"{'':>12} {'':>10} | {routing_accuracy(centroid_scores, truth):>8.1%} "
            f"{routing_accuracy(centroid_scores, truth, top):>8.1%}"
        )

        def router_row(name, pred, params, macs, seconds, steps):
            print(
                f"{name:<34} {params:>9} {macs:>10} {seconds:>8.0f} {steps:>6} | "
                f"{'':>12} {'':>10} | "
                f"{routing_accuracy(pred, truth):>8.1%} {routing_accuracy(pred, truth, top):>8.1%}",
                flush=True,
            )

        if "router" in args.models:
            model = ap.SupportNet(
                ds.d, num_outputs=nlist, width=args.router_width, depth=2, homogeneous=True
            )
            last = train(
                model,
                args.budget,
                **{**fit_kwargs, "keys": grouped},
                offsets=offsets,
                key_weight=0.0,
                score_weight=1.0,
            )
            router_row(
                f"SupportNet router {args.router_width}x2 hom.",
                ap.QueryTransform(model).scores(test_q),
                sum(p.numel() for p in model.parameters()),
                model.multiply_adds(),
                last["seconds"],
                last["step"],
            )
        if "maxaffine-router" in args.models:
            start = time.perf_counter()
            router = MaxAffineRouter.fit(
                grouped,
                offsets,
                train_q,
                args.router_macs // ds.d - nlist,
                num_threads=args.threads,
            )
            router_row(
                f"max-affine router {len(router.pieces)} pieces",
                router.scores(test_q),
                router.pieces.size,
                router.multiply_adds(),
                time.perf_counter() - start,
                0,
            )


if __name__ == "__main__":
    main()
