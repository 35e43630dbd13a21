"""Declared recall for an amortized IVF index: ``calibrate`` measures, query by query, how many
lists queries like the user's need; ``search(x, k, target_recall=r)`` then scans each query's first
lists and as many more as its group needs (see ``amips_plugins.effort``)."""

from __future__ import annotations

import time

import faiss
import numpy as np

from .._freshness import check_measurable, kept_calibration_queries
from .._validation import as_k, as_matrix, as_positive_int
from ..effort import EffortTable, ScoreBins, effort_grid
from ..exact import topk_dot
from .search import default_scan_params, scan_params
from .state import IVFState

__all__ = ["FIRST_LISTS", "Calibration", "check_calibration"]


# Lists every target_recall search scans before choosing how many more a query needs (see
# calibrate): on GloVe and WordNet + MiniLM, 2 to 4 first lists saved the most keys scanned.
FIRST_LISTS = 4


class Calibration(IVFState):
    """``calibrate`` and the ``target_recall`` search of ``AmortizedIVFBase``."""

    def calibrate(
        self, queries, k: int = 10, *, keys=None, max_nprobe: int | None = None
    ) -> np.ndarray:
        """Measure how many lists queries like ``queries`` (n, d) need, query by query: the
        recall@k of this index's choice of lists at nprobe up to ``max_nprobe`` (default nlist),
        against the exact top-k (``keys`` as for ``grouped_keys``). The queries are grouped
        by the k-th best score (over |q|) in their first ``FIRST_LISTS`` lists.

        Then ``search(x, k, target_recall=r)`` scans each query's first lists, finds its group
        from what they hold, and scans as many more as that group needs, so that the mean
        recall@k over queries like these is r at the fewest keys scanned (never fewer than the
        first lists).

        Use held-out queries, not those the router was fitted on: the router finds its own
        training queries' answers more often, and the targets would be missed. Changing the
        router or the query transform clears the calibration. A key counts as found when its
        list is probed (the scan is exact; ``max_codes`` is not modelled). Returns the mean
        recall@k at nprobe 1 .. max_nprobe, (max_nprobe,) float64.

        The index keeps up to ``KEPT_CALIBRATION_QUERIES`` of the queries: after the keys
        change, the next ``target_recall`` search measures the calibration again on them
        (``last_search_stats["calibration"]`` says ``"measured again"``), or, with
        ``auto_recalibrate = False``, raises ``StaleCalibrationError``. Where the lists hold
        codes, measuring needs the raw keys: call ``calibrate`` again with ``keys``.
        """
        q = as_matrix(queries, "queries", dim=self._d, allow_empty=False)
        raw = None if keys is None else as_matrix(keys, "keys", dim=self._d)
        with self._lock.reading():
            self._require_keys()
            k = as_k(k, self.ntotal, len(q))
            depth = (
                self.nlist
                if max_nprobe is None
                else min(as_positive_int(max_nprobe, "max_nprobe"), self.nlist)
            )
            self._note_changes_from_cpp()
            table, found_at = self._measure(q, k, depth, *self._grouped_keys(raw)[:2])
            self._effort, self._effort_version = table, self._keys_version
            self._calibration_queries, self._calibration_depth = kept_calibration_queries(q), depth
        return np.bincount(found_at.ravel(), minlength=depth + 1)[:depth].cumsum() / found_at.size

    def _measure(self, q, k, depth, grouped, offsets) -> tuple[EffortTable, np.ndarray]:
        """The effort table of queries ``q`` for this index's choice of lists, and the probe at
        which each of their true top-k keys is found (n, k) (``depth``: not within it); under
        the lock, over the keys ``grouped`` by list as ``offsets``."""
        _, rows = topk_dot(q, grouped, k)
        true_lists = np.searchsorted(offsets, rows, side="right") - 1  # (n, k)
        lists = self._route(q, faiss.SearchParametersIVF(nprobe=depth))[0]
        found_at = np.empty(true_lists.shape, np.int64)  # the probe reaching each key; depth: none
        for a in range(0, len(q), 1024):  # (chunk, depth, k) comparisons at a time
            hit = lists[a : a + 1024, :, None] == true_lists[a : a + 1024, None, :]
            found_at[a : a + 1024] = np.where(hit.any(axis=1), hit.argmax(axis=1), depth)
        first = min(FIRST_LISTS, depth)
        efforts = effort_grid(first, depth, ratio=1.1)
        recall = np.stack([(found_at < n).mean(axis=1) for n in efforts], axis=1)
        sizes = np.diff(offsets)
        scanned = np.cumsum(np.where(lists >= 0, sizes[np.maximum(lists, 0)], 0), axis=1)
        scores = self._scan(
            q, k, np.ascontiguousarray(lists[:, :first]), default_scan_params(first, 0)
        )[0]
        bins, group = ScoreBins.fit(kth_score_over_norm(scores, q))
        # cost: keys scanned, plus one so that it is positive where the first lists are empty
        table = EffortTable.from_queries(
            k, efforts, bins, group, recall, 1 + scanned[:, efforts - 1]
        )
        return table, found_at

    def _calibration(self, k: int) -> tuple[EffortTable, str]:
        """The calibration for a ``target_recall`` search at this k, measured again on the kept
        queries when the keys changed since (under the read lock); and which of the two."""
        table = self._effort
        if table is None:
            raise ValueError(
                "target_recall needs a calibration: call calibrate(held_out_queries, k) first "
                "(after fitting the router)"
            )
        if k != table.k:
            raise ValueError(f"the index was calibrated for k = {table.k}, not {k}")
        if self._effort_version == self._keys_version:
            return table, "current"
        with self._recalibrating:  # one search measures, the others wait for its table
            current = self._effort
            if current is None or self._effort_version != self._keys_version:
                current = self._measured_again(table)
                self._effort, self._effort_version = current, self._keys_version
            return current, "measured again"

    def _measured_again(self, table: EffortTable) -> EffortTable:
        """The calibration measured again on the kept queries, after the keys changed."""
        queries = self._calibration_queries
        obstacle = None
        if not isinstance(self, faiss.IndexIVFFlat):
            obstacle = "its lists hold codes, which cannot give the keys back: pass keys="
        elif self.ntotal < table.k:
            obstacle = f"it holds {self.ntotal} keys, fewer than k = {table.k}"
        check_measurable(self.auto_recalibrate, queries, obstacle)
        grouped, offsets, _ = self._grouped_keys(None)
        return self._measure(queries, table.k, self._calibration_depth, grouped, offsets)[0]

    def _search_to_target(self, q: np.ndarray, k: int, target_recall, params):
        """The calibrated search: each query's first lists, then its group's further ones."""
        table, state = self._calibration(k)
        chosen = table.efforts_for(target_recall)  # nprobe per group
        start = time.perf_counter()
        deepest = int(chosen.max())
        lists, _, network_flops, coarse = self._route(q, scan_params(params, deepest, 0))
        routed = time.perf_counter()
        first = int(table.efforts[0])
        D, I, distances = self._scan(
            q,
            k,
            np.ascontiguousarray(lists[:, :first]),
            scan_params(params, first, self.max_codes),
        )
        nprobe = chosen[table.group_of(kth_score_over_norm(D, q))]
        # each query its own lists; none scanned past the deepest these queries need
        reach = int(nprobe.max()) if len(q) else first
        lists = np.where(np.arange(reach)[None, :] < nprobe[:, None], lists[:, :reach], -1)
        if reach > first:
            rest = np.ascontiguousarray(lists[:, first:])
            D2, I2, distances2 = self._scan(
                q, k, rest, scan_params(params, reach - first, self.max_codes)
            )
            D, I = merge_top_k(D, I, D2, I2)
            distances += distances2
        self._record_stats(
            q, lists, nprobe.mean(), distances, network_flops, coarse, (start, routed)
        )
        self.last_search_stats["nprobe_per_query"] = nprobe
        self.last_search_stats["calibration"] = state
        return D, I


def check_calibration(calibration: dict, index) -> EffortTable:
    """The effort table a file's ``calibration`` states, checked against the faiss ``index``."""
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
    already hold high scores for its length has little left to find."""
    return scores[:, -1] / np.maximum(np.linalg.norm(q, axis=1), 1e-30)


def merge_top_k(D1, I1, D2, I2):
    """The best k of two searches' (D, I) (n, k) each, best first, padding (-1 ids) last."""
    D, I = np.concatenate([D1, D2], axis=1), np.concatenate([I1, I2], axis=1)
    order = np.argsort(np.where(I >= 0, -D, np.inf), axis=1, kind="stable")[:, : D1.shape[1]]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)
