"""Searching an amortized IVF index: route (choose each query's lists), scan them (exact,
float16 and 4-bit fast-scan lists on the core, other codes with faiss's ``search_preassigned``),
record what it cost in ``last_search_stats``."""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

from .. import _core
from .._freshness import warn_stale
from .._packed import pack_rows
from .._validation import as_int64, as_k, as_matrix, as_num_threads, into_out
from ..routing import CentroidRouter, InTurn, MaxAffineRouter, PieceGraphRouter
from ..routing.centroids import centroids_for
from ..routing.in_turn import take_in_turn
from .state import IVFState

__all__ = ["Search", "check_params", "default_scan_params", "merge_top_k", "scan_params"]

_MIN_QUERIES_PER_THREAD = 16  # below this, starting a thread costs more than it saves
# faiss's per-call buffers grow with queries x k: in calls of 256 queries they stay in cache (16-18%
# more queries/s over WordNet's fast-scan codes at a re-ranking depth) and the per-thread heaps
# keep little of them once freed (113 MB less after calibrating on WordNet)
_QUERIES_PER_CALL = 256


class Search(IVFState):
    """``search``, ``search_lists`` and ``probed_lists`` of ``AmortizedIVFBase``."""

    def search(self, x, k: int, *, params=None, target_recall=None, D=None, I=None):
        """Top-k keys of every query of ``x`` (n, d) by inner product, in the probed lists.

        ``params`` (a ``faiss.SearchParametersIVF``) sets nprobe, ``max_codes`` and the id
        selector ``sel`` for this call; ``target_recall`` (after ``calibrate``) sets every
        query's nprobe from the k-th best score in its first lists, so that the mean recall@k
        over queries like the calibration ones meets it (``last_search_stats["nprobe_per_query"]``).
        Returns ``(D, I)``: float32 (n, k) inner products best first and int64 (n, k) ids,
        padded as faiss pads (-FLT_MAX / -1) where the lists hold fewer than k keys; written
        into ``D`` / ``I`` when given, as in faiss. A re-ranking index scans for
        ``int(k * k_factor)`` candidates and returns their best k by exact inner product.
        """
        q = as_matrix(x, "x", dim=self._d)
        check_params(params)
        with self._lock.reading():
            self._note_changes_from_cpp()
            k = as_k(k, self.ntotal, len(q), pad=True)
            if target_recall is None:
                scores, ids = self._search(q, k, params)
            else:
                scores, ids = self._search_to_target(q, k, target_recall, params)
            stale = set(self._stale)
            self.last_search_stats["stale"] = sorted(stale)
        warn_stale(stale)
        return into_out(D, scores, "D"), into_out(I, ids, "I")

    def _search(self, q: np.ndarray, k: int, params):
        start = time.perf_counter()
        lists, nprobe, network_flops, coarse_distances = self._route(q, params)
        routed = time.perf_counter()
        depth = self._depth(k)
        # without a learned part, faiss's own results, bit for bit
        plain = self._router_impl is None and self._transform_impl is None
        per_call = scan_params(params, nprobe, self.max_codes)
        D, I, distances = self._scan(q, depth, lists, per_call, as_faiss=plain)
        if self.refines:
            D, I = self._reranked(q, k, I)
        probed = int(np.count_nonzero(lists >= 0))
        self._record_stats(
            q, probed, nprobe, distances, network_flops, coarse_distances, (start, routed)
        )
        self._note_reranked(depth)
        return D, I

    def _record_stats(self, q, probed, nprobe, distances, network_flops, coarse_distances, times):
        """``last_search_stats`` of a search: ``probed`` the lists it scanned, ``times`` (its
        start, the end of its routing)."""
        start, routed = times
        end = time.perf_counter()
        n = max(len(q), 1)
        self.last_search_stats = {
            "queries": len(q),
            "nprobe": nprobe,
            "lists_probed": probed / n,
            "distances": distances / n + coarse_distances,
            "flops": 2 * (distances / n + coarse_distances) * self.d + network_flops,
            "network_flops": network_flops,
            "routing_s": routed - start,
            "scan_s": end - routed,
        }

    def _note_reranked(self, depth: int) -> None:
        """A re-ranking search's ``last_search_stats``: the candidates re-ranked per query, and
        their inner products in ``flops``."""
        if self.refines:
            self.last_search_stats["reranked"] = depth
            self.last_search_stats["flops"] += 2 * depth * self._d

    def _route(self, q: np.ndarray, params, beam: int | None = None):
        """(lists (n, nprobe) int64, nprobe, network FLOPs and coarse distances per query);
        ``beam``: a graph router's walk width, None: its own."""
        self._require_trained()
        nprobe = min(self.nprobe if params is None else params.nprobe, self.nlist)
        if nprobe < 1:
            raise ValueError(f"nprobe must be positive, got {nprobe}")
        router = self._search_router(beam)
        lists = np.ascontiguousarray(router.rank(q, nprobe, self, params), dtype=np.int64)
        if lists.size and lists.min() < 0:  # faiss's ranking fills what a router leaves
            short = (lists < 0).any(axis=1)  # (nprobe = nlist: all of them)
            rest = centroids_for(q[short], nprobe, self, params)
            both = np.concatenate([lists[short], rest], axis=1)
            lists[short] = take_in_turn(both, np.empty((len(both), 0), np.int64), nprobe)
        return (lists, nprobe, *router.cost(self, nprobe))

    def probed_lists(self, x, *, params=None) -> np.ndarray:
        """The lists ``search`` probes for each query of ``x`` (n, d): (n, nprobe) int64,
        best first, -1 where fewer exist (``params`` as for ``search``)."""
        q = as_matrix(x, "x", dim=self._d)
        check_params(params)
        with self._lock.reading():
            return self._route(q, params)[0]

    def search_lists(self, x, k: int, lists, *, params=None):
        """Top-k keys of every query of ``x`` (n, d) in the lists given for it, ``lists`` (n, m)
        int64 (-1: none): ``search`` with the choice of lists left to the caller (faiss's
        ``search_preassigned``). Returns ``(D, I)`` as ``search`` does (re-ranked as ``search``
        re-ranks); the scan's counts go to ``last_search_stats``."""
        q = as_matrix(x, "x", dim=self._d)
        chosen = as_int64(lists, "lists", ndim=2)
        check_params(params)
        if len(chosen) != len(q):
            raise ValueError(f"lists has {len(chosen)} rows for {len(q)} queries")
        if chosen.size and (chosen.min() < -1 or chosen.max() >= self.nlist):
            raise ValueError(f"lists must lie in -1 .. {self.nlist - 1}")
        with self._lock.reading():
            self._require_trained()
            k = as_k(k, self.ntotal, len(q), pad=True)
            start = time.perf_counter()
            per_call = scan_params(params, chosen.shape[1], self.max_codes)
            D, I, distances = self._scan(q, self._depth(k), chosen, per_call)
            if self.refines:
                D, I = self._reranked(q, k, I)
        self.last_search_stats = {
            "queries": len(q),
            "lists_probed": int(np.count_nonzero(chosen >= 0)) / max(len(q), 1),
            "distances": distances / max(len(q), 1),
            "scan_s": time.perf_counter() - start,
        }
        return D, I

    def _search_router(self, beam: int | None = None):
        """The router a search uses: the learned one (the router before the query transform;
        a graph router walked with ``beam``), taken in turn with faiss's ranking under
        ``probe_union``, else faiss's alone."""
        learned = self._router_impl or self._transform_impl
        if learned is None:
            return CentroidRouter(self._d, self.nlist)
        if beam is not None and beam != learned.ef:
            learned = learned.with_ef(beam)
        if not self._takes_in_turn():
            return learned
        return InTurn(learned, CentroidRouter(self._d, self.nlist, on_core=True))

    def _takes_in_turn(self) -> bool:
        """Whether a learned ranking is taken in turn with faiss's (``probe_union``)."""
        if self.probe_union is None:  # the default: measured best with the max-affine router only
            return isinstance(self._router, MaxAffineRouter)
        return self.probe_union

    def _routed_on_core(self, q, k: int, depth: int, plan: tuple, params):
        """A calibrated search's steps (the graph router's walk, taken in turn with faiss's
        ranking under ``probe_union``; the scan of the lists with ``plan``'s deepening; the
        re-ranking) in one call into the core, where every step runs there: no ``params``,
        ``xbox`` or query transform, a flat inner-product quantizer and lists the core scans.
        The results are the steps' called one at a time, in 0.80x their time a WordNet + MiniLM
        query at 0.90 and 0.84x at 0.95 (the two taking turns in one process). (D, I, each
        query's lists scanned, distances computed, lists scanned in all, network FLOPs and
        coarse distances per query, routing seconds), or None."""
        router = self._router_impl
        if params is not None or self.xbox is not None or self._transform_impl is not None:
            return None
        if not isinstance(router, PieceGraphRouter):
            return None
        views, centroids = self._list_views(None), self._read_centroids()
        if views is None or centroids.panels is None:
            return None
        beam, _, deepest, deepening = plan
        nprobe, in_turn = min(deepest, self.nlist), self._takes_in_turn()
        residual = not isinstance(self, faiss.IndexIVFFlat) and self.by_residual
        raw = self._raw_rows() if self.refines else None
        pieces = router.pieces
        with pieces.lock.reading():
            D, I, reached, distances, probed, scored, routing_s = _core.routed_search(
                q,
                pieces.graph,
                pieces.element_lists,
                router.ef if beam is None else beam,
                nprobe,
                *centroids.panels,
                in_turn,
                centroids.rows if residual else None,
                views,
                deepening,
                depth,
                raw,
                k,
                as_num_threads(None),
            )
        _count_in_faiss_stats(len(q), probed, distances)
        network_flops = round(2 * router.dim * scored / max(len(q), 1))
        coarse = self.nlist if in_turn and nprobe > 1 else 0
        return D, I, reached, distances, probed, network_flops, coarse, routing_s

    def _scan(
        self, q: np.ndarray, k: int, lists: np.ndarray, params, centroid_scores=None, as_faiss=False
    ):
        """The scan of the given lists (n, nprobe) for the queries ``q`` (with ``xbox``, their
        augmented form): (D, I, distances computed). ``centroid_scores``: the lists'
        ``_centroid_scores`` when already computed. Lists of float32 or float16 rows and 4-bit
        fast-scan codes are scanned on the core, unless ``as_faiss`` (their scores may differ from
        faiss's: float rows in the last bits, summed in another order; fast-scan codes within
        their tables' rounding, which faiss also applies to residual codes' list offsets); other
        codes by faiss. Either scan's counts are added to ``faiss.cvar.indexIVF_stats``, as
        faiss's search does.
        """
        views = None if as_faiss else self._list_views(params)
        if views is not None:
            return self._scan_on_core(q, k, lists, views, centroid_scores)[:3]
        return self._scan_by_faiss(q, k, lists, params, centroid_scores)

    def _scan_deepening(self, q, k: int, lists, params, deepening):
        """A calibrated search's scan: each query's first ``deepening.first`` lists, then as
        many of its lists (n, nprobe) as ``deepening`` gives it from the ``deepening.kth`` best
        score found there (``params``: the caller's, or None; each scan's nprobe set here).
        (D, I, distances computed, each query's lists scanned (n,), the lists scanned in all)."""
        views = self._list_views(params)
        if views is not None:
            return self._scan_on_core(q, k, lists, views, None, deepening)
        centroid_scores = self._centroid_scores(q, lists)  # once for both scans
        first = deepening.first
        part = scan_params(params, first, self.max_codes)
        D, I, distances = self._scan_by_faiss(
            q, k, lists[:, :first], part, np.ascontiguousarray(centroid_scores[:, :first])
        )
        probed = int(np.count_nonzero(lists[:, :first] >= 0))
        reached = np.minimum(deepening.nprobe_for(D[:, deepening.kth - 1], q), lists.shape[1])
        reach = int(reached.max()) if len(q) else first
        if reach > first:  # each query its own lists; none scanned past the deepest needed
            rest = np.arange(first, reach)[None, :] < reached[:, None]
            more = np.where(rest, lists[:, first:reach], -1)
            probed += int(np.count_nonzero(more >= 0))
            D2, I2, distances2 = self._scan_by_faiss(
                q,
                k,
                more,
                scan_params(params, reach - first, self.max_codes),
                np.ascontiguousarray(centroid_scores[:, first:reach]),
            )
            D, I = merge_top_k(D, I, D2, I2)
            distances += distances2
        return D, I, distances, np.maximum(reached, first), probed

    def _scan_on_core(self, q, k, lists, views, centroid_scores, deepening=None):
        """The core's scan of ``views``: (D, I, distances computed, each query's lists scanned,
        the lists scanned in all)."""
        queries = self.xbox.transform_queries(q) if self.xbox is not None else q
        offsets = None  # residual codes: the list's centroid score is part of each key's
        if not isinstance(self, faiss.IndexIVFFlat) and self.by_residual:
            offsets = centroid_scores
            if offsets is None:
                offsets = self._centroid_scores(q, lists)
        D, I, distances, reached = _core.scan_lists(
            queries, lists, views, k, offsets, as_num_threads(None), deepening
        )
        probed = probed_count(lists, reached)
        _count_in_faiss_stats(len(q), probed, distances)
        return D, I, distances, reached, probed

    def _scan_by_faiss(self, q, k, lists, params, centroid_scores):
        """faiss's ``search_preassigned`` of the lists (n, nprobe): (D, I, distances computed).
        It runs on one thread (faiss's own ``search`` parallelises above it), so the queries are
        split over faiss's OpenMP thread count here; faiss releases the GIL."""
        queries = self.xbox.transform_queries(q) if self.xbox is not None else q
        lists = np.ascontiguousarray(lists)
        n = len(lists)
        D = np.empty((n, k), np.float32)
        I = np.empty((n, k), np.int64)
        if centroid_scores is None:
            centroid_scores = self._centroid_scores(q, lists)
        counted = not isinstance(self, faiss.IndexIVFFastScan)  # fast-scan refuses the counters

        def scan(rows: slice):
            stats = faiss.IndexIVFStats() if counted else None
            for start in range(rows.start, rows.stop, _QUERIES_PER_CALL):
                block = slice(start, min(start + _QUERIES_PER_CALL, rows.stop))
                self.search_preassigned_c(
                    block.stop - block.start,
                    faiss.swig_ptr(queries[block]),
                    k,
                    faiss.swig_ptr(lists[block]),
                    faiss.swig_ptr(centroid_scores[block]),
                    faiss.swig_ptr(D[block]),
                    faiss.swig_ptr(I[block]),
                    False,
                    params,
                    stats,
                )
            return stats

        threads = n // _MIN_QUERIES_PER_THREAD
        if threads > 1:  # faiss's thread count asked only then: a call into faiss for one query
            threads = min(faiss.omp_get_max_threads(), threads)
        if threads <= 1:
            parts = [scan(slice(0, n))]
        else:
            bounds = np.linspace(0, n, threads + 1).astype(int).tolist()
            with ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(scan, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))
        if not counted:
            return D, I, int(self._list_sizes()[lists].sum())
        for stats in parts:
            faiss.cvar.indexIVF_stats.add(stats)
        return D, I, sum(stats.ndis for stats in parts)

    def _list_views(self, params):
        """The lists as the core scans them (``_core.ListViews`` over faiss's own memory, no
        copy), or None where faiss scans: codes other than float32 rows (``IndexIVFFlat``),
        float16 ones (``SQfp16``) and 4-bit fast-scan codes (``PQ..x4fs``), lists faiss does not
        hold in memory, or ``params`` (the caller's; None: the index's ``max_codes``) that select
        ids or cap the codes scanned. faiss scores float16 rows one key per call (5-9x slower
        than the core on GloVe); the core reads a list that one or two queries of a call probe
        in place, row by row, and packs one that more probe once for them all. Fast-scan codes
        it reads in faiss's blocks, in one call for a calibrated search's two scans where faiss
        takes two. Read again after each change of keys or
        of the lists object (checked by address: 5 us of a one-query search less than faiss's
        downcast)."""
        if not isinstance(self, _CORE_SCANNED):
            return None  # before reading params and the lists: other codes never reach the core
        if params is not None:
            if params.sel is not None or params.max_codes:
                return None
        elif self.max_codes:  # what faiss reads without the caller's params
            return None
        seen = (self._keys_version, self.ntotal, int(self.invlists.this))
        if self._views is None or self._views[0] != seen:
            self._views = (seen, self._new_list_views())
        return self._views[1]

    def _new_list_views(self):
        """``_core.ListViews`` of the lists, or None where the core cannot scan them."""
        if isinstance(self, faiss.IndexIVFPQFastScan):
            return self._fast_scan_views()
        halves = (
            isinstance(self, faiss.IndexIVFScalarQuantizer)
            and self.sq.qtype == faiss.ScalarQuantizer.QT_fp16
        )
        if not (halves or isinstance(self, faiss.IndexIVFFlat)):
            return None
        invlists = faiss.downcast_InvertedLists(self.invlists)
        if not isinstance(invlists, faiss.ArrayInvertedLists):
            return None
        rows, ids, dtype = [], [], np.float16 if halves else np.float32
        for c in range(self.nlist):
            size = invlists.list_size(c)
            if size == 0:
                rows.append(np.empty((0, self.d), dtype))
                ids.append(np.empty(0, np.int64))
                continue
            codes = faiss.rev_swig_ptr(invlists.get_codes(c), size * self.code_size)
            rows.append(codes.view(dtype).reshape(size, self.d))
            ids.append(faiss.rev_swig_ptr(invlists.get_ids(c), size))
        return _core.ListViews(rows, ids, self.d)

    def _fast_scan_views(self):
        """``_core.ListViews.pq4`` over faiss's fast-scan blocks, or None for a layout other
        than faiss's blocks of 32 keys."""
        invlists = faiss.downcast_InvertedLists(self.invlists)
        if not isinstance(invlists, faiss.BlockInvertedLists) or invlists.n_per_block != 32:
            return None
        blocks, ids = [], []
        for c in range(self.nlist):
            size = invlists.list_size(c)
            length = -(-size // 32) * invlists.block_size
            blocks.append(
                faiss.rev_swig_ptr(invlists.get_codes(c), length) if size else np.empty(0, np.uint8)
            )
            ids.append(faiss.rev_swig_ptr(invlists.get_ids(c), size) if size else _NO_IDS)
        pq = self.pq
        codebook = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
        return _core.ListViews.pq4(blocks, ids, codebook, self.d)

    def _list_sizes(self) -> np.ndarray:
        """Every list's size, then a 0 (nlist + 1,): indexed by lists, -1 (none) counts 0;
        read again after each change of keys."""
        seen = (self._keys_version, self.ntotal)
        if self._sizes is None or self._sizes[0] != seen:
            invlists = self.invlists
            sizes = [invlists.list_size(c) for c in range(self.nlist)]
            self._sizes = (seen, np.array([*sizes, 0], np.int64))
        return self._sizes[1]

    def _centroid_scores(self, q: np.ndarray, lists: np.ndarray) -> np.ndarray:
        """q . centroid (with ``xbox``, of the augmented q) of every probed list (n, nprobe):
        residual codes (PQ, SQ, RaBitQ) add it to their scores, as in faiss's own search;
        IndexIVFFlat ignores it."""
        if isinstance(self, faiss.IndexIVFFlat):
            return np.zeros(lists.shape, np.float32)
        queries = self.xbox.transform_queries(q) if self.xbox is not None else q
        # both already checked: the core's rescore without exact.rescore's second check
        return _core.rescore(queries, self._read_centroids().rows, lists, as_num_threads(None))

    def _read_centroids(self) -> Centroids:
        if self._centroids is None:  # cleared by train
            self._centroids = Centroids(self)
        return self._centroids

    def _ranked_centroids(self, q: np.ndarray, nprobe: int, params) -> np.ndarray | None:
        """faiss's ranking of the lists for ``q`` (n, nprobe), computed by the core from the
        centroids, where the quantizer is a flat inner-product one and ``params`` set none of its
        own: the same lists but where two centroids' scores tie within float rounding (faiss's
        search of 343 centroids took 39 us of a one-query search on WordNet + MiniLM at 0.95,
        the core about 20 less). None where only faiss's ranking is faiss's."""
        centroids = self._read_centroids()
        if centroids.panels is None or (params is not None and params.quantizer_params):
            return None
        queries = self.xbox.transform_queries(q) if self.xbox is not None else q
        panels, n_packed, tail = centroids.panels
        threads = as_num_threads(None)
        return _core.topk_dot_packed(queries, panels, n_packed, tail, nprobe, threads)[1]


class Centroids:
    """The quantizer's centroids (nlist, d), read once after training: their rows and, for a flat
    inner-product quantizer, the same packed for the core's top-k (``_packed.pack_rows``)."""

    def __init__(self, index):
        rows = index.quantizer.reconstruct_n(0, index.nlist)
        self.rows = as_matrix(rows, "the quantizer's centroids", dim=index.d)
        quantizer = faiss.downcast_index(index.quantizer)
        flat = type(quantizer) in (faiss.IndexFlatIP, faiss.IndexFlat)
        inner_product = quantizer.metric_type == faiss.METRIC_INNER_PRODUCT
        self.panels = pack_rows(self.rows) if flat and inner_product else None


def probed_count(lists: np.ndarray, reached: np.ndarray) -> int:
    """The lists (n, nprobe) scanned (not -1) among each query's first ``reached`` (n,)."""
    if lists.size and lists.min() >= 0:  # every query's first reached are lists (4 us less)
        return int(reached.sum())
    within = np.arange(lists.shape[1])[None, :] < reached[:, None]
    return int(np.count_nonzero((lists >= 0) & within))


def _count_in_faiss_stats(queries: int, probed: int, distances: int) -> None:
    """A scan on the core counted in ``faiss.cvar.indexIVF_stats``, as faiss's search counts."""
    stats = faiss.cvar.indexIVF_stats
    stats.nq += queries
    stats.nlist += probed
    stats.ndis += distances


def merge_top_k(D1, I1, D2, I2):
    """The best k of two searches' (D, I) (n, k) each, best first, padded as faiss pads."""
    D, I = np.concatenate([D1, D2], axis=1), np.concatenate([I1, I2], axis=1)
    k = D1.shape[1]
    return _core.topk_rows(D, k, as_num_threads(None), labels=I)  # ties: D1's first


# faiss IVF classes whose lists the core scans (a search without ``sel`` or ``max_codes``)
_CORE_SCANNED = (faiss.IndexIVFFlat, faiss.IndexIVFScalarQuantizer, faiss.IndexIVFPQFastScan)
_NO_IDS = np.empty(0, np.int64)

_IVF_PARAMS = [
    name
    for name in dir(faiss.SearchParametersIVF)
    if isinstance(getattr(faiss.SearchParametersIVF, name), property) and name != "thisown"
]


def check_params(params) -> None:
    if params is not None and not isinstance(params, faiss.SearchParametersIVF):
        raise TypeError(f"params must be a faiss.SearchParametersIVF, got {params!r:.100}")


def scan_params(params, nprobe: int, max_codes: int):
    """The caller's ``SearchParametersIVF`` with the lists' count ``nprobe``: itself where it says
    that count already, else a copy (never changed: other threads may share it; copying its
    fields took 10 us, a sixth of a one-query search); without one, the index's own
    ``max_codes``, as faiss does."""
    if params is None:
        return default_scan_params(nprobe, max_codes)
    if params.nprobe == nprobe:
        return params
    scan = faiss.SearchParametersIVF()
    for name in _IVF_PARAMS:
        setattr(scan, name, getattr(params, name))
    scan.nprobe = nprobe
    return scan


@functools.lru_cache(maxsize=64)
def default_scan_params(nprobe: int, max_codes: int):
    """Parameters for a search without the caller's: faiss only reads them, so one object serves
    every search (and thread) with these values."""
    scan = faiss.SearchParametersIVF()
    scan.nprobe, scan.max_codes = nprobe, max_codes
    return scan
