"""Exact top-k inner product: amips_plugins vs faiss.IndexFlatIP vs numpy, side by side.

    python benchmarks/bench_topk.py                 # the full grid (about 6 minutes on 2 cores)
    python benchmarks/bench_topk.py --n 100000 --d 50 --nq 1 10

Every cell uses the same keys, queries, k and thread count for the three methods; the table shows
medians. For nq = 1 it also prints the time one
streaming read of the keys takes (the memory-bandwidth bound for a single query).
"""

from __future__ import annotations

import argparse
import os


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[100_000, 500_000], help="numbers of keys")
    p.add_argument("--d", type=int, nargs="+", default=[50, 128, 384], help="dimensions")
    p.add_argument("--nq", type=int, nargs="+", default=[1, 10, 100, 1000], help="query batch sizes")
    p.add_argument("--big-nq", type=int, default=10_000, help="extra batch size for the smallest n (0: none)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--reps", type=int, default=5, help="repetitions per cell (median reported)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


ARGS = parse_args()
# numpy's BLAS reads its thread count at import: give every method the same number.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import statistics  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

import amips_plugins as ap  # noqa: E402
from amips_plugins.evaluation import time_each  # noqa: E402


def numpy_topk(queries, keys, k, chunk=256):
    """The plain numpy way: one matrix product and an argpartition per chunk of queries."""
    ids = np.empty((len(queries), k), np.int64)
    for a in range(0, len(queries), chunk):
        s = queries[a : a + chunk] @ keys.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1)
        ids[a : a + chunk] = np.take_along_axis(part, order, axis=1)
    return ids


def streaming_read_seconds(keys, threads, reps):
    """Time for `threads` threads to read every byte of keys once (numpy releases the GIL)."""
    parts = np.array_split(keys, threads)
    with ThreadPoolExecutor(threads) as pool:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            list(pool.map(np.max, parts))
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    faiss.omp_set_num_threads(ARGS.threads)
    rng = np.random.default_rng(ARGS.seed)
    print(
        f"amips_plugins {ap.__version__} ({ap.simd_level()}), faiss {faiss.__version__}, "
        f"numpy {np.__version__}; {ARGS.threads} threads, k={ARGS.k}, median of {ARGS.reps}"
    )
    header = (
        f"{'n':>7} {'d':>4} {'nq':>6} | {'ours ms':>9} {'faiss ms':>9} {'numpy ms':>9} | "
        f"{'ours q/s':>9} {'faiss q/s':>9} | {'ours/faiss':>10} {'ours/numpy':>10} | "
        f"{'same ids':>8} | read-once bound"
    )
    print(header)
    print("-" * len(header))
    for n in ARGS.n:
        for d in ARGS.d:
            keys = rng.standard_normal((n, d), dtype=np.float32)
            ours, theirs = ap.ExactIndex(d), faiss.IndexFlatIP(d)
            ours.add(keys)
            theirs.add(keys)
            bound = streaming_read_seconds(keys, ARGS.threads, ARGS.reps)
            batch_sizes = list(ARGS.nq)
            if n == min(ARGS.n) and ARGS.big_nq:
                batch_sizes.append(ARGS.big_nq)
            for nq in batch_sizes:
                queries = rng.standard_normal((nq, d), dtype=np.float32)
                secs, res = time_each(
                    {
                        "ours": lambda: ours.search(queries, ARGS.k)[1],
                        "faiss": lambda: theirs.search(queries, ARGS.k)[1],
                        "numpy": lambda: numpy_topk(queries, keys, ARGS.k),
                    },
                    ARGS.reps,
                )
                same = (res["ours"] == res["faiss"]).mean()
                bound_txt = (
                    f"{bound * 1e3:.1f} ms, ours/bound {secs['ours'] / bound:.2f}" if nq == 1 else ""
                )
                print(
                    f"{n:>7} {d:>4} {nq:>6} | {secs['ours'] * 1e3:>9.1f} {secs['faiss'] * 1e3:>9.1f} "
                    f"{secs['numpy'] * 1e3:>9.1f} | {nq / secs['ours']:>9.0f} {nq / secs['faiss']:>9.0f} | "
                    f"{secs['faiss'] / secs['ours']:>10.2f} {secs['numpy'] / secs['ours']:>10.2f} | "
                    f"{same:>8.1%} | {bound_txt}",
                    flush=True,
                )
    print("ours/faiss and ours/numpy are speed-ups (their time / our time); > 1 means we are faster.")


if __name__ == "__main__":
    main()
