"""Match rate and recall against compute: sweeps, tables and plots."""

from __future__ import annotations

import gc
import math
import os
import statistics
import time

import numpy as np

from .. import _core
from .._optional import require
from .._progress import Progress, ProgressArg

__all__ = [
    "built",
    "format_table",
    "match_rate",
    "plot_curves",
    "recall_at_k",
    "resident_mb",
    "settled_resident_mb",
    "sweep",
    "time_each",
]


def resident_mb() -> float:
    """This process's resident memory (MB; NaN where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return math.nan


def settled_resident_mb() -> float:
    """``resident_mb`` after a garbage collection, with the C heap's free pages handed back:
    what live objects hold, so that an index built after another is not credited with the
    memory the first freed (the allocator's per-thread caches aside)."""
    gc.collect()
    _core.release_free_memory()
    return resident_mb()


def built(build) -> tuple[float, float]:
    """Run ``build()``: (seconds, growth of settled resident memory in MB)."""
    before = settled_resident_mb()
    start = time.perf_counter()
    build()
    seconds = time.perf_counter() - start
    return seconds, settled_resident_mb() - before


def match_rate(ids, true_top1) -> float:
    """Fraction of queries whose exact top-1 key is among the returned ids.

    ids : int (nq, k) returned by a method (-1 for none); true_top1 : int (nq,)
    """
    ids, true_top1 = np.asarray(ids), np.asarray(true_top1)
    if ids.ndim != 2 or true_top1.shape != (ids.shape[0],):
        raise ValueError(f"ids {ids.shape} and true_top1 {true_top1.shape} do not match")
    return float((ids == true_top1[:, None]).any(axis=1).mean())


def recall_at_k(ids, true_ids) -> float:
    """Mean fraction of the exact top-k (true_ids, (nq, k)) found among the returned ids (nq, k)."""
    ids, true_ids = np.asarray(ids), np.asarray(true_ids)
    if ids.shape != true_ids.shape or ids.ndim != 2:
        raise ValueError(
            f"ids {ids.shape} and true_ids {true_ids.shape} must have the same (nq, k) shape"
        )
    hits = sum(np.isin(row, truth[truth >= 0]).sum() for row, truth in zip(ids, true_ids))
    return float(hits / max(1, (true_ids >= 0).sum()))


def time_each(methods: dict, reps: int = 5):
    """Median seconds of each zero-argument callable in ``methods``, and each one's last result.

    Each runs its repetitions in a block, after a pause and one warm-up call: faiss's OpenMP and
    numpy's BLAS threads spin for up to ~0.1 s after a call, which would tax whichever ran next.
    """
    times, results = {}, {}
    for name, fn in methods.items():
        time.sleep(0.3)
        results[name] = fn()
        runs = []
        for _ in range(reps):
            start = time.perf_counter()
            results[name] = fn()
            runs.append(time.perf_counter() - start)
        times[name] = statistics.median(runs)
    return times, results


def sweep(
    methods,
    keys,
    queries,
    true_ids,
    *,
    k: int = 10,
    single_queries: int = 0,
    progress: ProgressArg = False,
) -> list[dict]:
    """Build every method on ``keys`` and search ``queries`` at each of its sweep parameters.

    Returns one dict per (method, parameter): method, param_name, param, k, match_rate (top-1),
    recall (at k), ms_per_query (wall-clock for the whole batch / nq, a learned model's inference
    included), distances_per_query, flops_per_query (2 per multiply-add of every distance, plus the
    network's; NaN when the library reports no count), build_s (training included), fit_s (the
    learned part's share of it) and memory_mb (growth of this process's resident memory while it
    was built: approximate, the methods built in turn in one process). With ``single_queries``,
    also single_query_ms: the median wall-clock of that many of the queries searched one at a
    time (serving latency).
    ``progress``: True for a tqdm bar over the methods, or a callable(done, total).
    """
    rows = []
    with Progress(progress, len(methods), "methods") as bar:
        for method in methods:
            rows += _measure(method, keys, queries, true_ids, k, single_queries)
            bar.update()
    return rows


def _measure(method, keys, queries, true_ids, k: int, single_queries: int) -> list[dict]:
    """``sweep``'s rows for one method."""
    rows = []
    build_s, memory_mb = built(lambda: method.build(keys))
    for param in method.params:
        method.search(queries[: min(len(queries), 64)], k, param)  # warm-up
        start = time.perf_counter()
        ids, distances = method.search(queries, k, param)
        elapsed = time.perf_counter() - start
        row = {}
        if single_queries:
            one_at_a_time = []
            for i in range(min(single_queries, len(queries))):
                start = time.perf_counter()
                method.search(queries[i : i + 1], k, param)
                one_at_a_time.append(time.perf_counter() - start)
            row["single_query_ms"] = 1e3 * statistics.median(one_at_a_time)
        rows.append(
            {
                "method": method.name,
                "param_name": method.param_name,
                "param": param,
                "k": k,
                "match_rate": match_rate(ids, true_ids[:, 0]),
                "recall": recall_at_k(ids, true_ids[:, :k]),
                "ms_per_query": 1e3 * elapsed / len(queries),
                "distances_per_query": distances,
                "flops_per_query": 2.0 * method.distance_dim * distances + method.network_flops,
                "build_s": build_s,
                "fit_s": getattr(method, "fit_s", 0.0),
                "memory_mb": memory_mb,
                **row,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """The sweep as an aligned text table."""
    header = (
        f"{'method':<40} {'param':>20} {'top-1 match':>11} {'recall@k':>9} "
        f"{'ms/query':>9} {'queries/s':>9} {'dist/query':>10} {'MFLOP/q':>8} {'build s':>8}"
    )
    single = any("single_query_ms" in r for r in rows)
    if single:
        header += f" {'1-query ms':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        param = "" if r["param_name"] is None else f"{r['param_name']} {r['param']}"
        dist = "n/a" if math.isnan(r["distances_per_query"]) else f"{r['distances_per_query']:.0f}"
        mflops = "n/a" if math.isnan(r["flops_per_query"]) else f"{r['flops_per_query'] / 1e6:.3f}"
        lines.append(
            f"{r['method']:<40} {param:>20} {r['match_rate']:>11.1%} {r['recall']:>9.1%} "
            f"{r['ms_per_query']:>9.4f} {1e3 / r['ms_per_query']:>9.0f} {dist:>10} {mflops:>8} "
            f"{r['build_s']:>8.1f}"
            + (f" {r.get('single_query_ms', math.nan):>10.4f}" if single else "")
        )
    return "\n".join(lines)


def plot_curves(rows: list[dict], path, title: str = "") -> None:
    """PNG with two panels: top-1 match rate against wall-clock per query and against FLOPs per
    query (distances and network), one line per method."""
    matplotlib = require("matplotlib", "harness")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        match = [100 * r["match_rate"] for r in mine]
        style = dict(marker="o", label=name)
        axes[0].plot([r["ms_per_query"] for r in mine], match, **style)
        if not any(math.isnan(r["flops_per_query"]) for r in mine):
            axes[1].plot([r["flops_per_query"] for r in mine], match, **style)
    for ax, xlabel in zip(
        axes, ["wall-clock per query (ms, batch)", "FLOPs per query (network included)"]
    ):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 match rate (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
