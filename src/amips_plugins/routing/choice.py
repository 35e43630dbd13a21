"""Choosing an index's router at a compute budget, by held-out training queries.

Which learned ranking finds the most best keys for a given number of FLOPs per query depends on
the data: on GloVe (d = 50) 16 exactly scored pieces per list are cheap, on d = 384 text a graph
walk over every training answer is (see ``graph``). So the default ``fit_router`` fits each
candidate on most of the training queries, measures on the rest how often the best key's list is
among the first nprobe lists against the FLOPs per query (routing, coarse distances and the
scan, the last at 2 d per key, as faiss's search counts them, and at ``CODE_SCAN_SHARE`` of that
per compressed code), and keeps the candidate and nprobe that find the most within the budget;
faiss's own ranking is a candidate too.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import faiss
import numpy as np

from .._validation import as_num_threads
from .centroids import CentroidRouter
from .graph import PieceGraphRouter
from .in_turn import InTurn
from .max_affine import MaxAffineRouter, principal_directions

__all__ = ["Choice", "choose_router", "default_budget"]

log = logging.getLogger(__name__)

HELD_OUT = 5_000  # queries kept for measuring, at most a tenth of them
FEW_PER_LIST = 4  # fewer distinct training queries per list than this earn a warning
FLAT_PIECES_PER_LIST = 16  # the exactly scored router: measured best on GloVe
GRAPH_PIECES_PER_LIST = 128  # the graph's: about every distinct answer of WordNet's 180k queries
# beams tried: at ef 128 the walk found 0.5 points more best keys at equal FLOPs on WordNet, but
# its inner products (latency-bound, 384-byte codes) cost about twice a scan's per FLOP in time:
# 95.3% at 0.220 ms per query against ef 64's 95.4% at 0.206, and 1.27x faiss's one-query latency
GRAPH_EFS = (32, 64)
PROJECTED_ABOVE, PROJECTED_DIM = 256, 128  # exact pieces of wide keys scored in 128 dimensions
LISTS_PER_FAISS_PROBE = 20  # the default budget: faiss probing one list in 20 (5%), rounded down
# A compressed code scanned costs this share of an exact key's 2 d FLOPs: on WordNet + MiniLM
# (d = 384) faiss's 4-bit fast-scan took 19 / 9 / 7 ns a code at nprobe 4 / 16 / 64, where
# IndexIVFFlat took 64-66 ns a key. Counting codes at full price chose a graph walk twice as wide
# (ef 64), which ran at 0.82x the queries/s of ef 32 at recall@10 0.90 over re-ranked codes.
CODE_SCAN_SHARE = 0.3


@dataclass
class Choice:
    router: object  # None: faiss's own ranking
    probe_union: bool
    nprobe: int
    report: list[dict]  # per candidate: its best nprobe within the budget, top-1 and FLOPs


def default_budget(nlist: int) -> int:
    """The nprobe whose cost in faiss's own search is the default budget: 5% of the lists,
    rounded down as that setting is usually quoted (27 of 547, 17 of 343), at least one."""
    return max(1, nlist // LISTS_PER_FAISS_PROBE)


def choose_router(
    index, keys, offsets, ids, queries, best, budget, num_threads=None, seed=0
) -> Choice:
    """The candidate router, union with faiss's ranking and nprobe that find the best key's list
    for the most held-out ``queries`` within ``budget`` FLOPs per query (None: what faiss's own
    search spends at 5% of the lists on them). ``keys`` (n, d) grouped by list as ``offsets``,
    with their ``ids`` (n,); ``best`` (nq,) the row of each query's best key."""
    threads = as_num_threads(num_threads)
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be a positive number of FLOPs per query, got {budget}")
    # Held-out queries are distinct from every fitted one: a copy on both sides would
    # measure the router on what it was fitted to.
    _, first, copy_of = np.unique(queries, axis=0, return_index=True, return_inverse=True)
    nlist, d = len(offsets) - 1, keys.shape[1]
    held_count = min(HELD_OUT, len(first) // 10)
    if held_count < 1:
        raise ValueError(
            f"choosing a router needs at least 10 distinct training queries, got {len(first)} "
            f"among {len(queries)}"
        )
    if len(first) < FEW_PER_LIST * nlist:
        warnings.warn(
            f"{len(first)} distinct training queries for {nlist} lists: the router is fitted "
            f"and measured on few; at least {FEW_PER_LIST * nlist} are advised",
            stacklevel=3,
        )
    held_groups = np.random.default_rng(seed).permutation(len(first))[:held_count]
    held_rows = first[held_groups]
    fit_rows = np.flatnonzero(~np.isin(copy_of.reshape(-1), held_groups))
    held, fit = queries[held_rows], queries[fit_rows]
    held_lists = np.searchsorted(offsets, best[held_rows], side="right") - 1
    fit_answers = best[fit_rows]

    max_nprobe = min(nlist, max(64, 4 * default_budget(nlist)))
    curves: dict[str, tuple[object, bool]] = {"faiss centroids": (None, False)}
    projection = principal_directions(fit, PROJECTED_DIM) if d > PROJECTED_ABOVE else None
    flat = MaxAffineRouter.from_answers(
        keys, offsets, fit_answers, FLAT_PIECES_PER_LIST * nlist, projection, ids
    )
    many = MaxAffineRouter.from_answers(
        keys, offsets, fit_answers, GRAPH_PIECES_PER_LIST * nlist, None, ids
    )
    graph = PieceGraphRouter.build(
        many.pieces, many.offsets, GRAPH_EFS[0], num_threads=threads, piece_ids=many.piece_ids
    )
    for router in (flat, *(graph.with_ef(ef) for ef in GRAPH_EFS)):
        for union in (False, True):
            curves[repr(router) + (" + centroids" if union else "")] = (router, union)

    sizes = np.diff(offsets)
    measured = {
        name: _found_and_flops(index, router, union, held, held_lists, sizes, max_nprobe)
        for name, (router, union) in curves.items()
    }
    if budget is None:
        budget = measured["faiss centroids"][1][default_budget(nlist) - 1]
    report: list[dict] = []
    for name, (found, flops) in measured.items():
        within = np.flatnonzero(flops <= budget)
        if len(within) == 0:
            continue
        p = within[np.argmax(found[within])]  # the first of equal bests: the cheapest
        report.append(
            {
                "router": name,
                "nprobe": int(p + 1),
                "top1": float(found[p]),
                "flops": float(flops[p]),
            }
        )
    if not report:
        raise ValueError(
            f"a budget of {budget:.4g} FLOPs per query is below every router's cost at one probe"
        )
    # the most found, then the cheapest; on a tie, the simpler (faiss's, then without the union)
    report.sort(key=lambda row: (-row["top1"], row["flops"]))
    chosen = report[0]
    log.info("budget %.4g FLOPs: %s at nprobe %d", budget, chosen["router"], chosen["nprobe"])
    router, union = curves[chosen["router"]]
    return Choice(router, union, chosen["nprobe"], report)


def _found_and_flops(index, router, union, queries, answer_lists, sizes, max_nprobe):
    """(share of queries whose answer list is among the first p, FLOPs per query) for p = 1 ..
    max_nprobe, as arrays."""
    centroids = CentroidRouter(index.d, len(sizes))
    ranking = centroids if router is None else InTurn(router, centroids) if union else router
    lists = ranking.rank(queries, max_nprobe, index, None)
    hit = lists == answer_lists[:, None]
    position = np.where(hit.any(1), hit.argmax(1), max_nprobe)
    found = np.bincount(position, minlength=max_nprobe + 1).cumsum()[:max_nprobe] / len(queries)
    scanned = np.where(lists >= 0, sizes[np.maximum(lists, 0)], 0).cumsum(1).mean(0)
    share = 1.0 if isinstance(index, faiss.IndexIVFFlat) else CODE_SCAN_SHARE
    flops = np.empty(max_nprobe)
    for p in range(1, max_nprobe + 1):
        network, coarse = ranking.cost(index, p)
        flops[p - 1] = network + 2 * index.d * (coarse + share * scanned[p - 1])
    return found, flops
