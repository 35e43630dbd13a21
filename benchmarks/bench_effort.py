"""Declarative recall for IVF: AmortizedIVF.search(target_recall=...) against faiss's IVF at the
fixed nprobe that meets the same target.

    python benchmarks/bench_effort.py

GloVe 6B 50d (300k keys, nlist 547): the router is fitted on the first 80k training queries; both
indexes are calibrated on the other 10k (ours by ``calibrate``, faiss's by the smallest nprobe
whose recall@10 reaches the target there), and measured on the 10k held-out test queries:
achieved recall@10, queries/s in one batch and one query at a time, distances per query.
"""

from __future__ import annotations

import math
import statistics
import time

import faiss

import amips_plugins as ap
from amips_plugins.ground_truth import default_cache_dir
from amips_plugins.harness.datasets import builtin
from amips_plugins.harness.evaluation import recall_at_k

TARGETS = (0.90, 0.95, 0.99)
K = 10


def main():
    ds = builtin("glove50")
    keys, test = ds.keys, ds.test_queries
    fit_q, calibration_q = ds.train_queries[:80_000], ds.train_queries[80_000:]
    nlist = math.isqrt(len(keys))
    truth = {
        name: ap.ground_truth(keys, q, K, cache_dir=default_cache_dir(), progress=False)[1]
        for name, q in (("calibration", calibration_q), ("test", test))
    }

    ours = ap.AmortizedIVF(None, ds.d, nlist)
    ours.train(keys)
    ours.add(keys)
    ours.fit_router(fit_q)
    ours.calibrate(calibration_q, K)
    theirs = faiss.IndexIVFFlat(faiss.IndexFlatIP(ds.d), ds.d, nlist, faiss.METRIC_INNER_PRODUCT)
    theirs.train(keys)
    theirs.add(keys)

    def faiss_search(q, nprobe):
        theirs.nprobe = nprobe
        faiss.cvar.indexIVF_stats.reset()
        ids = theirs.search(q, K)[1]
        return ids, nlist + faiss.cvar.indexIVF_stats.ndis / len(q)

    def ours_search(q, target):
        ids = ours.search(q, K, target_recall=target)[1]
        return ids, ours.last_search_stats["distances"]

    print(f"{ds.name}: nlist {nlist}, k {K}, {faiss.omp_get_max_threads()} threads")
    for target in TARGETS:
        lo, hi = 1, nlist  # recall grows with nprobe: the smallest meeting the target
        while lo < hi:
            mid = (lo + hi) // 2
            if recall_at_k(faiss_search(calibration_q, mid)[0], truth["calibration"]) >= target:
                hi = mid
            else:
                lo = mid + 1
        nprobe = lo
        rows = {
            "AmortizedIVF target_recall": lambda q, t=target: ours_search(q, t),
            f"faiss IVF nprobe {nprobe}": lambda q, n=nprobe: faiss_search(q, n),
        }
        qps = {}
        for name, search in rows.items():
            search(test[:100])  # warm-up
            start = time.perf_counter()
            ids, distances = search(test)
            batch = time.perf_counter() - start
            single = []
            for i in range(300):
                start = time.perf_counter()
                search(test[i : i + 1])
                single.append(time.perf_counter() - start)
            qps[name] = len(test) / batch
            extra = f" (nprobe {ours.last_search_stats['nprobe']})" if name.startswith("Am") else ""
            print(
                f"target {target:.2f} {name + extra:38s} R@10 {recall_at_k(ids, truth['test']):.4f}"
                f"  {qps[name]:8.0f} q/s batch  {1e3 * statistics.median(single):.3f} ms one "
                f"query  {distances:8.0f} distances/query"
            )
        ours_qps, faiss_qps = qps.values()
        print(f"target {target:.2f} queries/s ours / faiss: {ours_qps / faiss_qps:.2f}")


if __name__ == "__main__":
    main()
