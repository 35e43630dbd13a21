"""A growing index: learned parts fitted on half of the keys, the other half added in batches.

    python benchmarks/bench_stream.py                        # GloVe, IVF and HNSW, both orders
    python benchmarks/bench_stream.py --dataset wordnet --index ivf --order random

The keys are split by a seeded permutation: the first half builds each index (ours: trained,
``fit_router`` on 80k training queries, ``calibrate`` on 10k others; HNSW: ``calibrate``), the
second half arrives in ``--batches`` batches, in random order or by descending norm (Vespa
measured that the order matters for graphs), then ``--remove`` of all keys leave in one step.
No learned part is fitted again. After every step, on the test queries and the keys present:

- top-1 found and recall@10 at the default setting (ours: the nprobe ``fit_router`` chose, or
  the HNSW's ef), separately for queries whose best key is one of the first half ("old") and
  one added later ("new");
- recall@10 of ``search(..., target_recall=r)`` for every target, or the error it raised, and
  the time of the first such search after the step, on one query (ours measure the calibration
  again there after a change of keys);
- the seconds per added key of each ``add``;

and at the end, for AmortizedIVF, the same after ``fit_router`` and ``calibrate`` again (and
their seconds): what following the keys spared.

The peers run on the same stream: faiss IVFFlat (its own centroids, trained on the first half)
at our nprobe and at the nprobe that met each target on the calibration queries at the start;
hnswlib at the ef that met each target at the start. Their settings are not changed either.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import faiss
import hnswlib
import numpy as np

import amips_plugins as ap
from amips_plugins._hnsw_file import insertion_order
from amips_plugins.harness.datasets import builtin
from amips_plugins.harness.evaluation import recall_at_k

K = 10
TARGETS = (0.90, 0.95, 0.99)


def smallest(search, queries, truth, target, low, high):
    """The smallest setting in [low, high] whose recall@K on ``queries`` reaches ``target``."""
    if recall_at_k(search(queries, high), truth) < target:
        return None
    while low < high:
        middle = (low + high) // 2
        if recall_at_k(search(queries, middle), truth) >= target:
            high = middle
        else:
            low = middle + 1
    return low


class OursIVF:
    name = "AmortizedIVF"

    def __init__(self, keys, ids, fit_q, cal_q, cal_truth):
        self.index = ap.AmortizedIVF(None, keys.shape[1], math.isqrt(2 * len(keys)))
        self.index.train(keys)
        self.index.add_with_ids(keys, ids)
        self.index.fit_router(fit_q)
        self.index.calibrate(cal_q, K)
        self.setting = f"nprobe {self.index.nprobe} ({type(self.index.router).__name__})"

    def add(self, keys, ids):
        self.index.add_with_ids(keys, ids)

    def remove(self, ids):
        self.index.remove_ids(ids)

    def refit(self, fit_q, cal_q):
        """What the stream spared: fitting the router and calibrating again on the keys present."""
        self.index.fit_router(fit_q)
        self.index.calibrate(cal_q, K)

    def default(self, q):
        return self.index.search(q, K)[1]

    def target(self, q, r):
        return self.index.search(q, K, target_recall=r)[1]


class FaissIVF:
    name = "faiss IVFFlat"

    def __init__(self, keys, ids, nprobe, cal_q, cal_truth):
        d = keys.shape[1]
        self.index = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(d), d, math.isqrt(2 * len(keys)), faiss.METRIC_INNER_PRODUCT
        )
        self.index.train(keys)
        self.index.add_with_ids(keys, ids)
        self.nprobe = nprobe
        self.for_target = {
            r: smallest(self._search, cal_q, cal_truth, r, 1, self.index.nlist) for r in TARGETS
        }
        self.setting = f"nprobe {nprobe}; for targets {self.for_target}"

    def _search(self, q, nprobe):
        return self.index.search(q, K, params=faiss.SearchParametersIVF(nprobe=nprobe))[1]

    def add(self, keys, ids):
        self.index.add_with_ids(keys, ids)

    def remove(self, ids):
        self.index.remove_ids(ids)

    def default(self, q):
        return self._search(q, self.nprobe)

    def target(self, q, r):
        if self.for_target[r] is None:
            raise ValueError("not reached at the start")
        return self._search(q, self.for_target[r])


class OursHNSW:
    name = "AmortizedHNSW"

    def __init__(self, keys, ids, ef, cal_q, cal_truth, capacity, threads):
        self.index = ap.AmortizedHNSW("ip", keys.shape[1])
        self.index.init_index(capacity, M=16, ef_construction=200)
        self.index.set_num_threads(threads)
        self.index.add_items(keys, ids)
        self.index.calibrate(cal_q, K)
        self.index.set_ef(ef)
        self.setting = f"ef {ef}"

    def add(self, keys, ids):
        self.index.add_items(keys, ids)

    def remove(self, ids):
        for label in ids:
            self.index.mark_deleted(int(label))

    def default(self, q):
        return self.index.knn_query(q, K)[0].astype(np.int64)

    def target(self, q, r):
        return self.index.knn_query(q, K, target_recall=r)[0].astype(np.int64)


class Hnswlib:
    name = "hnswlib"

    def __init__(self, keys, ids, cal_q, cal_truth, capacity, threads):
        self.index = hnswlib.Index(space="ip", dim=keys.shape[1])
        self.index.init_index(capacity, M=16, ef_construction=200)
        self.index.set_num_threads(threads)
        order = insertion_order(keys)  # its best order for the first half
        self.index.add_items(keys[order], ids[order])
        self.for_target = {r: smallest(self._search, cal_q, cal_truth, r, K, 1000) for r in TARGETS}
        self.ef = self.for_target[0.95] or 1000
        self.setting = f"ef {self.ef}; for targets {self.for_target}"

    def _search(self, q, ef):
        self.index.set_ef(ef)
        return self.index.knn_query(q, K)[0].astype(np.int64)

    def add(self, keys, ids):
        self.index.add_items(keys, ids)

    def remove(self, ids):
        for label in ids:
            self.index.mark_deleted(int(label))

    def default(self, q):
        return self._search(q, self.ef)

    def target(self, q, r):
        if self.for_target[r] is None:
            raise ValueError("not reached at the start")
        return self._search(q, self.for_target[r])


def steps(keys, order: str, batches: int, remove: float, seed: int):
    """(initial ids, then (name, ids added, ids removed) per step)."""
    perm = np.random.default_rng(seed).permutation(len(keys))
    first, rest = np.sort(perm[: len(keys) // 2]), perm[len(keys) // 2 :]
    if order == "norm":
        rest = rest[insertion_order(keys[rest])]
    out = [
        (f"add {i + 1}/{batches}", part, None)
        for i, part in enumerate(np.array_split(rest, batches))
    ]
    if remove > 0:
        gone = np.random.default_rng(seed + 1).choice(len(keys), int(remove * len(keys)), False)
        out.append((f"remove {remove:.0%}", None, gone))
    return first, out


def evaluate(contender, test, truth, is_new):
    row = {}
    found = contender.default(test)
    for part, mask in (("old", ~is_new), ("new", is_new)):
        if mask.any():
            row[f"top1_{part}"] = float((found[mask] == truth[mask, :1]).any(1).mean())
            row[f"recall_{part}"] = recall_at_k(found[mask], truth[mask])
    try:  # the first search after a change measures the calibration again: time it on one query
        start = time.perf_counter()
        contender.target(test[:1], TARGETS[0])
        row["remeasure_s"] = time.perf_counter() - start
    except ValueError:
        pass
    for r in TARGETS:
        try:
            row[f"target_{r}"] = recall_at_k(contender.target(test, r), truth)
        except ValueError as e:
            row[f"target_{r}"] = f"error: {str(e)[:80]}"
    return row


def show(step, name, row, add_us):
    def cell(key):
        v = row.get(key)
        return f"{v:.3f}" if isinstance(v, float) else ("  -  " if v is None else "error")

    targets = " ".join(cell(f"target_{r}") for r in TARGETS)
    print(
        f"{step:12s} {name:14s} top1 old {cell('top1_old')} new {cell('top1_new')}  "
        f"R@10 old {cell('recall_old')} new {cell('recall_new')}  targets {targets}  "
        f"add {add_us:7.2f} us/key  first target search {row.get('remeasure_s', 0):.2f} s",
        flush=True,
    )
    for r in TARGETS:
        if isinstance(row.get(f"target_{r}"), str):
            print(f"{'':12s} {name:14s} target {r}: {row[f'target_{r}']}")


def run(ds, index_kind, order, args):
    keys, test = ds.keys, ds.test_queries
    split = np.random.default_rng(0).permutation(len(ds.train_queries))
    fit_q, cal_q = ds.train_queries[split[:80_000]], ds.train_queries[split[-10_000:]]
    first, plan = steps(keys, order, args.batches, args.remove, args.seed)
    present = np.zeros(len(keys), bool)
    present[first] = True
    cal_truth = first[ap.topk_dot(cal_q, keys[first], K)[1]]
    start = time.perf_counter()
    if index_kind == "ivf":
        ours = OursIVF(keys[first], first, fit_q, cal_q, cal_truth)
        contenders = [ours, FaissIVF(keys[first], first, ours.index.nprobe, cal_q, cal_truth)]
    else:
        theirs = Hnswlib(keys[first], first, cal_q, cal_truth, len(keys), args.threads)
        ours = OursHNSW(keys[first], first, theirs.ef, cal_q, cal_truth, len(keys), args.threads)
        contenders = [ours, theirs]
    print(f"{ds.name} {index_kind}, {order} order: built in {time.perf_counter() - start:.0f} s")
    for c in contenders:
        print(f"  {c.name}: {c.setting}")
    rows = []
    for step, added, removed in [("start", None, None), *plan]:
        add_us = {}
        for c in contenders:
            begin = time.perf_counter()
            if added is not None:
                c.add(keys[added], added)
            if removed is not None:
                c.remove(removed[present[removed]])
            add_us[c.name] = (
                1e6 * (time.perf_counter() - begin) / (1 if added is None else len(added))
            )
        if added is not None:
            present[added] = True
        if removed is not None:
            present[removed] = False
        ids = np.flatnonzero(present)
        truth = ids[ap.topk_dot(test, keys[ids], K)[1]]
        is_new = ~np.isin(truth[:, 0], first)
        for c in contenders:
            row = evaluate(c, test, truth, is_new)
            show(step, c.name, row, add_us[c.name] if added is not None else 0.0)
            rows.append({"step": step, "method": c.name, "add_us_per_key": add_us[c.name], **row})
    if hasattr(ours, "refit"):  # at the end, what a refit would give, and its time
        begin = time.perf_counter()
        ours.refit(fit_q, cal_q)
        refit_s = time.perf_counter() - begin
        row = evaluate(ours, test, truth, is_new)
        show("refit", ours.name, row, 0.0)
        print(f"{'':12s} {ours.name:14s} fit_router and calibrate again: {refit_s:.0f} s")
        rows.append({"step": "refit", "method": ours.name, "refit_s": refit_s, **row})
    return rows


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=["glove50", "wordnet"], default="glove50")
    p.add_argument("--index", choices=["ivf", "hnsw"], nargs="+", default=["ivf", "hnsw"])
    p.add_argument("--order", choices=["random", "norm"], nargs="+", default=["random", "norm"])
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--remove", type=float, default=0.1, help="share of all keys removed at the end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--out", default="results/bench_stream")
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)
    ds = builtin(args.dataset)
    results = {}
    for kind in args.index:
        for order in args.order:
            results[f"{kind}_{order}"] = run(ds, kind, order, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.dataset}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
