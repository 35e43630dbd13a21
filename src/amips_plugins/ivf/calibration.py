"""Declared recall for an amortized IVF index: ``calibrate`` measures, query by query, how many
lists queries like the user's need; ``search(x, k, target_recall=r)`` then scans each query's first
lists and as many more as its group needs (see ``amips_plugins.effort``)."""

from __future__ import annotations

import functools
import time

import faiss
import numpy as np

from .. import _core
from .._freshness import check_measurable, kept_calibration_queries
from .._held_out import require_held_out
from .._validation import as_k, as_matrix, as_positive_int, as_target_recall
from ..effort import EffortTable, ScoreBins, effort_grid
from ..exact import topk_dot
from .search import default_scan_params, merge_top_k, scan_params
from .state import IVFState

__all__ = ["FIRST_LISTS", "K_FACTORS", "Calibration", "calibration_state", "check_calibration"]


# Lists every target_recall search scans before choosing how many more a query needs (see
# calibrate): on GloVe and WordNet + MiniLM, 2 to 4 first lists saved the most keys scanned.
FIRST_LISTS = 4

# The re-ranking depths (k_factor) an index that re-ranks is calibrated at.
K_FACTORS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

# Each re-ranking depth's search is timed on up to this many calibration queries, over their first
# lists and over this many (for the time of a further key).
_TIMED_QUERIES = 2000
_TIMED_WIDE_LISTS = 16


class Calibration(IVFState):
    """``calibrate`` and the ``target_recall`` search of ``AmortizedIVFBase``."""

    def calibrate(
        self, queries, k: int = 10, *, keys=None, max_nprobe: int | None = None
    ) -> np.ndarray:
        """Measure how many lists queries like ``queries`` (n, d) need, query by query: the
        recall@k of this index's search at nprobe up to ``max_nprobe`` (default nlist), against
        the exact top-k (``keys`` as for ``grouped_keys``). The queries are grouped by the k-th
        best score (over |q|) in their first ``FIRST_LISTS`` lists.

        Then ``search(x, k, target_recall=r)`` scans each query's first lists, finds its group
        from what they hold, and scans as many more as that group needs, so that the mean
        recall@k over queries like these is r at the least cost (never fewer than the first
        lists). An index that re-ranks is measured at each re-ranking depth of ``K_FACTORS``,
        and a target search takes the depth whose nprobes meet the target at the least measured
        cost (keys scanned, and candidates re-ranked at their measured time). A graph router
        is measured at its own beam and half of it, each walk timed, and a target search takes
        the cheaper (on GloVe ef 32 ran at 1.34x the queries/s of ef 64 at recall@10 0.90, and
        ef 64 at 1.3x ef 32's at 0.99).

        Use held-out queries, not those the router was fitted on: the router finds its own
        training queries' answers more often, and the targets would be missed (ValueError
        when more than 1% are ``fit_router``'s). Changing the
        router or the query transform clears the calibration. Over exact lists (IndexIVFFlat)
        a key counts as found when its list is probed (``max_codes`` is not modelled); over
        compressed lists, when the scan's candidates hold it. Returns the mean recall@k at
        nprobe 1 .. max_nprobe, (max_nprobe,) float64: over compressed lists, measured on a
        grid of nprobes (every one up to 10, then about 10% apart; NaN between) at the deepest
        re-ranking.

        The index keeps up to ``KEPT_CALIBRATION_QUERIES`` of the queries: after the keys
        change, the next ``target_recall`` search measures the calibration again on them
        (``last_search_stats["calibration"]`` says ``"measured again"``), or, with
        ``auto_recalibrate = False``, raises ``StaleCalibrationError``. Where the lists hold
        codes and the index keeps no raw keys, measuring needs them: call ``calibrate`` again
        with ``keys``.
        """
        q = as_matrix(queries, "queries", dim=self._d, allow_empty=False)
        raw = None if keys is None else as_matrix(keys, "keys", dim=self._d)
        with self._lock.reading():
            require_held_out(q, self._router_queries, "fit_router")
            self._require_keys()
            k = as_k(k, self.ntotal, len(q))
            depth = (
                self.nlist
                if max_nprobe is None
                else min(as_positive_int(max_nprobe, "max_nprobe"), self.nlist)
            )
            self._note_changes_from_cpp()
            tables, curve = self._measure(q, k, depth, *self._grouped_keys(raw))
            _core.release_free_memory()  # what measuring freed: the exact top-k's transients
            self._effort, self._effort_version = tables, self._keys_version
            self._calibration_queries, self._calibration_depth = kept_calibration_queries(q), depth
        return curve

    def _measure(self, q, k, depth, grouped, offsets, ids):
        """The effort tables of queries ``q`` for this index's search, one per router beam and
        re-ranking depth ({(beam, k_factor): EffortTable}, see ``_beams``), and the mean
        recall@k at nprobe 1 .. ``depth`` at the router's own beam; under the lock, over the
        keys ``grouped`` by list as ``offsets``, with their ``ids``. Costs are seconds per
        query: the walk timed at each beam, and the scan timed once (``_ScanTime``), so that
        the beams differ by their walks and the keys they make the scan read, not by noise."""
        _, rows = topk_dot(q, grouped, k)
        sizes = np.diff(offsets)
        beams, sample = self._beams(), q[:_TIMED_QUERIES]
        routing = self._timed_routing(sample, beams)
        tables, curve, scan_time = {}, None, None
        for beam in beams:
            lists = self._route(q, faiss.SearchParametersIVF(nprobe=depth), beam)[0]
            scanned = np.cumsum(np.where(lists >= 0, sizes[np.maximum(lists, 0)], 0), axis=1)
            if isinstance(self, faiss.IndexIVFFlat) and not self.refines:
                measured = self._measure_exact(q, k, depth, lists, offsets, rows)
            else:
                measured = self._measure_scanned(q, k, depth, lists, ids[rows])
            efforts, bins, group, recall, beam_curve = measured
            first = int(efforts[0])
            if scan_time is None:
                scan_time = _ScanTime.measure(self, sample, k, list(recall), lists, scanned, first)
            for f, found in recall.items():
                cost = routing[beam] + scan_time.seconds(f, scanned, first)
                tables[(beam, f)] = EffortTable.from_queries(
                    k, efforts, bins, group, found, cost[:, efforts - 1]
                )
            curve = beam_curve if curve is None else curve
        return tables, curve

    def _beams(self) -> tuple:
        """The router beams a calibration measures: a graph router's own and half of it (the
        walk is a fixed cost per query, which a wide scan outweighs at a low target and needs
        less of at a high one); (None,) for a router without a beam."""
        router = self._router_impl
        if not hasattr(router, "with_ef"):
            return (None,)
        return tuple(dict.fromkeys((router.ef, max(1, router.ef // 2))))

    def _timed_routing(self, sample, beams) -> dict:
        """Seconds per query of the routing of ``sample`` at each beam ({beam: s}): the best of
        three, the beams taken in turn (each timed in its own pass, with its own scan, two
        calibrations of one GloVe index chose different beams at 0.95)."""
        params = default_scan_params(min(self.nlist, _TIMED_WIDE_LISTS), 0)
        best = dict.fromkeys(beams, np.inf)
        for _ in range(3):
            for beam in beams:
                route = functools.partial(self._route, sample, params, beam)
                best[beam] = min(best[beam], _seconds(route))
        return {beam: seconds / len(sample) for beam, seconds in best.items()}

    def _measure_exact(self, q, k, depth, lists, offsets, rows):
        """Exact lists: a true key is found once its list is probed. (efforts, groups, each
        query's group, {1.0: recall@k per query and effort}, mean recall@k per nprobe)."""
        true_lists = np.searchsorted(offsets, rows, side="right") - 1  # (n, k)
        found_at = np.empty(true_lists.shape, np.int64)  # the probe reaching each key; depth: none
        for a in range(0, len(q), 1024):  # (chunk, depth, k) comparisons at a time
            hit = lists[a : a + 1024, :, None] == true_lists[a : a + 1024, None, :]
            found_at[a : a + 1024] = np.where(hit.any(axis=1), hit.argmax(axis=1), depth)
        first = min(FIRST_LISTS, depth)
        efforts = effort_grid(first, depth, ratio=1.1)
        recall = np.stack([(found_at < n).mean(axis=1) for n in efforts], axis=1)
        scores = self._scan(
            q, k, np.ascontiguousarray(lists[:, :first]), default_scan_params(first, 0)
        )[0]
        bins, group = ScoreBins.fit(kth_score_over_norm(scores, q))
        curve = np.bincount(found_at.ravel(), minlength=depth + 1)[:depth].cumsum()
        return efforts, bins, group, {1.0: recall}, curve / found_at.size

    def _measure_scanned(self, q, k, depth, lists, truth):
        """Compressed lists: a true key (ids ``truth`` (n, k)) is found when it is among the
        scan's best candidates, at each re-ranking depth; the lists are scanned in steps of the
        nprobe grid, each step's candidates merged into the best so far. As ``_measure_exact``,
        with each re-ranking depth's recall."""
        factors = K_FACTORS if self.refines else (1.0,)
        depth_max = self._depth(k, factors[-1])
        grid = effort_grid(1, depth, ratio=1.1)
        first = min(FIRST_LISTS, depth)
        recall = {f: np.empty((len(q), len(grid))) for f in factors}
        D = I = None
        done = 0
        for j, stop in enumerate(grid.tolist()):
            chunk = np.ascontiguousarray(lists[:, done:stop])
            D2, I2, _ = self._scan(q, depth_max, chunk, default_scan_params(stop - done, 0))
            D, I = (D2, I2) if D is None else merge_top_k(D, I, D2, I2)
            if stop == first:
                feature = kth_score_over_norm(D[:, :k], q)
            position = _positions(I, truth)
            for f in factors:
                recall[f][:, j] = (position < self._depth(k, f)).mean(axis=1)
            done = stop
        bins, group = ScoreBins.fit(feature)
        curve = np.full(depth, np.nan)
        curve[grid - 1] = recall[factors[-1]].mean(axis=0)
        kept = grid >= first
        return grid[kept], bins, group, {f: r[:, kept] for f, r in recall.items()}, curve

    def _calibration(self, k: int) -> tuple[dict, str]:
        """The calibration for a ``target_recall`` search at this k, measured again on the kept
        queries when the keys changed since (under the read lock); and which of the two."""
        tables = self._effort
        if tables is None:
            raise ValueError(
                "target_recall needs a calibration: call calibrate(held_out_queries, k) first "
                "(after fitting the router)"
            )
        calibrated_k = next(iter(tables.values())).k
        if k != calibrated_k:
            raise ValueError(f"the index was calibrated for k = {calibrated_k}, not {k}")
        if self._effort_version == self._keys_version:
            return tables, "current"
        with self._recalibrating:  # one search measures, the others wait for its table
            current = self._effort
            if current is None or self._effort_version != self._keys_version:
                current = self._measured_again(k)
                self._effort, self._effort_version = current, self._keys_version
            return current, "measured again"

    def _measured_again(self, k: int) -> dict:
        """The calibration measured again on the kept queries, after the keys changed."""
        queries = self._calibration_queries
        obstacle = None
        if not isinstance(self, faiss.IndexIVFFlat) and not self.refines:
            obstacle = "its lists hold codes, which cannot give the keys back: pass keys="
        elif self.ntotal < k:
            obstacle = f"it holds {self.ntotal} keys, fewer than k = {k}"
        check_measurable(self.auto_recalibrate, queries, obstacle)
        return self._measure(queries, k, self._calibration_depth, *self._grouped_keys(None))[0]

    def _plan(self, tables: dict, target_recall, k: int):
        """The router beam and re-ranking depth, the deepest nprobe of a group and the
        ``_core.Deepening`` that meet ``target_recall`` at the least cost, kept per target for
        these tables (a tenth of a one-query search)."""
        target = as_target_recall(target_recall)
        plans = self._plans
        if plans is None or plans[0] is not tables:
            plans = self._plans = (tables, {})
        if target not in plans[1]:
            (beam, k_factor), table = cheapest(tables, target)
            chosen = table.efforts_for(target)
            first = int(table.efforts[0])
            deepening = _core.Deepening(first, k, table.groups.edges, chosen)
            plans[1][target] = (beam, k_factor, int(chosen.max()), deepening)
        return plans[1][target]

    def _search_to_target(self, q: np.ndarray, k: int, target_recall, params):
        """The calibrated search: each query's first lists, then its group's further ones; at
        the router beam and re-ranking depth that meet the target at the least cost."""
        tables, state = self._calibration(k)
        plan = self._plan(tables, target_recall, k)
        beam, k_factor, deepest, deepening = plan
        depth = self._depth(k, k_factor)
        start = time.perf_counter()
        on_core = self._routed_on_core(q, k, depth, plan, params)
        if on_core is not None:
            D, I, nprobe, distances, probed, network_flops, coarse, routing_s = on_core
            routed = start + routing_s
        else:
            lists, _, network_flops, coarse = self._route(q, scan_params(params, deepest, 0), beam)
            routed = time.perf_counter()
            D, I, distances, nprobe, probed = self._scan_deepening(
                q, depth, lists, params, deepening
            )
            if self.refines:
                D, I = self._reranked(q, k, I)
        mean_nprobe = nprobe.sum() / max(len(q), 1)  # numpy's mean: 4 us of a one-query search
        self._record_stats(
            q, probed, mean_nprobe, distances, network_flops, coarse, (start, routed)
        )
        self._note_reranked(depth)
        self.last_search_stats["nprobe_per_query"] = nprobe
        self.last_search_stats["calibration"] = state
        self.last_search_stats["router_ef"] = beam
        return D, I


class _ScanTime:
    """The time per query of a scan and its re-ranking, by re-ranking depth (k_factor): the
    search of the first lists timed at each depth (a deeper scan keeps more candidates in its
    heaps, and re-ranks more), plus each further key scanned at the time per key of a wider
    scan. Modelled on keys scanned alone, the scan's heaps went uncounted: at 0.90 on WordNet +
    MiniLM k_factor 8 and 4 cost the same, and 8 ran at 0.87x the queries/s of 4."""

    def __init__(self, at_first: dict, per_key: float):
        self.at_first, self.per_key = at_first, per_key

    @classmethod
    def measure(cls, index, sample, k, factors, lists, scanned, first) -> _ScanTime:
        """Timed on the queries ``sample`` over their ``lists`` (n >= len(sample), nprobe),
        which hold ``scanned`` keys (cumulative, (n, nprobe))."""
        wide = min(lists.shape[1], _TIMED_WIDE_LISTS)

        def scan(f, nprobe):
            chunk = np.ascontiguousarray(lists[: len(sample), :nprobe])
            params = default_scan_params(nprobe, 0)

            def search():
                candidates = index._scan(sample, index._depth(k, f), chunk, params)[1]
                if index.refines:
                    index._reranked(sample, k, candidates)

            return min(_seconds(search) for _ in range(3)) / len(sample)  # single runs: noisy

        at_first = {f: scan(f, first) for f in factors}
        keys_first, keys_wide = (scanned[: len(sample), n - 1].mean() for n in (first, wide))
        per_key = 0.0
        if keys_wide > keys_first:
            per_key = (scan(factors[0], wide) - at_first[factors[0]]) / (keys_wide - keys_first)
        # never below a tenth of the first lists' time per key: a noisy slope stays positive
        per_key = max(per_key, 0.1 * at_first[factors[0]] / max(keys_first, 1.0))
        return cls(at_first, per_key)

    def seconds(self, k_factor: float, scanned: np.ndarray, first: int) -> np.ndarray:
        """Per query (n, depth) over its first 1 .. depth lists, ``scanned`` the keys they
        hold (cumulative)."""
        further = np.maximum(scanned - scanned[:, first - 1 : first], 0)
        return self.at_first[k_factor] + self.per_key * further


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _positions(candidates: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Where each of ``truth`` (n, k) ids stands among ``candidates`` (n, m), best first: (n, k),
    m where absent."""
    m = candidates.shape[1]
    position = np.empty(truth.shape, np.int64)
    for a in range(0, len(truth), 1024):  # (chunk, k, m) comparisons at a time
        hit = truth[a : a + 1024, :, None] == candidates[a : a + 1024, None, :]
        position[a : a + 1024] = np.where(hit.any(axis=2), hit.argmax(axis=2), m)
    return position


def cheapest(tables: dict, target_recall) -> tuple[tuple, EffortTable]:
    """The setting (router beam, re-ranking depth) and its table whose choice of nprobes meets
    ``target_recall`` at the least cost; beyond every table's reach, the deepest one's error."""
    target_recall = as_target_recall(target_recall)
    reaching = {s: t for s, t in tables.items() if t.max_recall + 1e-12 >= target_recall}
    if not reaching:
        deepest = max(tables, key=lambda s: tables[s].max_recall)
        tables[deepest].efforts_for(target_recall)  # raises: above the calibrated maximum
    return min(reaching.items(), key=lambda item: item[1].cost_for(target_recall))


def calibration_state(tables: dict) -> dict:
    """The calibration as ``meta.json`` keeps it: one table (an index that does not re-rank,
    with a router without a beam) as its state, several as their beams, k_factors and states."""
    if list(tables) == [(None, 1.0)]:
        return tables[(None, 1.0)].state_dict()
    return {
        "beams": [beam for beam, _ in tables],
        "k_factors": [f for _, f in tables],
        "tables": [t.state_dict() for t in tables.values()],
    }


def check_calibration(calibration: dict, index) -> dict:
    """The effort tables ({(beam, k_factor): EffortTable}) a file's ``calibration`` states,
    checked against the faiss ``index`` and its router."""
    if "tables" in calibration:
        factors = [float(f) for f in calibration["k_factors"]]
        states = calibration["tables"]
        beams = calibration.get("beams", [None] * len(states))  # before beams: the router's own
        if not (len(factors) == len(states) == len(beams)):
            raise ValueError("the calibration needs one beam and one k_factor per table")
        if not all(f == 1 or (f > 1 and index.refines) for f in factors):
            raise ValueError("re-ranking calibrations need an index that re-ranks, k_factor >= 1")
        if any(b is not None for b in beams) and not hasattr(index._router_impl, "with_ef"):
            raise ValueError("the calibration's beams need a router with a beam")
        beams = [None if b is None else as_positive_int(b, "a calibration's beam") for b in beams]
        tables = {
            (b, f): _checked_table(state, index) for b, f, state in zip(beams, factors, states)
        }
        if len(tables) != len(states) or len({t.k for t in tables.values()}) != 1:
            raise ValueError("the calibration's tables repeat a setting or are for different k")
        return tables
    return {(None, 1.0): _checked_table(calibration, index)}


def _checked_table(calibration: dict, index) -> EffortTable:
    if "edges" not in calibration:  # files before per-query nprobe: one curve for all queries
        curve = np.asarray(calibration["recall"], dtype=np.float64)
        if curve.ndim != 1:
            raise ValueError("the calibration's recall must be a list of numbers")
        efforts = np.arange(1, len(curve) + 1)
        table = EffortTable(calibration["k"], efforts, ScoreBins([]), [1.0], [curve], efforts)
    else:
        table = EffortTable.from_state_dict(calibration, index.d)
    if table.efforts[-1] > index.nlist:
        raise ValueError(f"the calibration reaches nprobe {table.efforts[-1]} of {index.nlist}")
    return table


def kth_score_over_norm(scores: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Each query's k-th best inner product found (n,) over its norm: a query whose first lists
    already hold high scores for its length has little left to find (the core's rule, which a
    search on the core applies)."""
    return _core.score_over_norm(scores[:, -1], q)
