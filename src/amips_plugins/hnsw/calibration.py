"""Declared recall for an ``AmortizedHNSW``: ``calibrate`` measures the ef each group of
query directions needs; ``knn_query(x, k, target_recall=r)`` walks the graph on the C++ core at
each query's ef (see ``amips_plugins.effort``)."""

from __future__ import annotations

import numpy as np

from .. import _core
from .._freshness import check_measurable, kept_calibration_queries
from .._held_out import MAX_SHARED, require_held_out, shared
from .._validation import as_positive_int, as_target_recall
from ..effort import EffortTable, effort_grid
from ..exact import topk_dot
from .state import HNSWError, HNSWState, rows

__all__ = ["Calibration"]


class Calibration(HNSWState):
    """``calibrate`` and the walk of ``target_recall`` searches."""

    def calibrate(
        self, queries, k: int = 10, *, max_ef: int = 1000, num_threads: int = -1
    ) -> dict[int, float]:
        """Measure the ef queries like ``queries`` (n, dim) need: their recall@k against the exact
        top-k of the keys in the index at ef = k, 1.25 k, ... up to ``max_ef`` (stopping once the
        mean recall reaches 0.999), by group of query directions, and each ef's seconds per query.
        Then ``knn_query(data, k, target_recall=r)`` gives every query the ef of its group, so
        that the mean recall@k over queries like these is r at the least time.

        Use queries drawn as the searched ones will be (not those a query transform was fitted
        on, nor those ``fit_edges`` learned from: HNSWError when more than 1% are the latter).
        Setting a query transform clears the calibration. Searches wait while it runs.
        Returns the mean recall@k per ef measured.

        The index keeps up to ``KEPT_CALIBRATION_QUERIES`` of the queries: after the keys change
        (``add_items``, ``mark_deleted``, ...), the next ``target_recall`` search measures the
        calibration again on them (``last_search_stats["calibration"]`` says ``"measured
        again"``), or, with ``auto_recalibrate = False``, raises ``StaleCalibrationError``.
        """
        q = rows(queries, self.dim)
        k = as_positive_int(k, "k")
        max_ef = as_positive_int(max_ef, "max_ef")
        self._require_ready()
        if len(q) == 0:
            raise HNSWError("calibrate needs at least one query")
        with self._graph_lock.writing():
            require_held_out(q, self._edge_queries, "fit_edges", HNSWError)
            table = self._measure(q, k, max_ef, num_threads)
            self._effort, self._effort_version = table, self._keys_version
            self._calibration_queries = kept_calibration_queries(q)
            self._calibration_max_ef = max_ef
        return table.curve()

    def _measure(self, q: np.ndarray, k: int, max_ef: int, num_threads: int) -> EffortTable:
        """The effort table of queries ``q`` against the keys present (under the graph lock)."""
        count = self._live_count()
        if k > count:
            raise HNSWError(f"k = {k} exceeds the {count} elements in the index")
        live = np.ones(self._labels.count, bool)
        live[self._labels.elements(self._deleted_labels())] = False
        elements = np.flatnonzero(live)
        keys = self._require_ready().keys(elements)[:, : self.dim]
        truth = self._labels.all[elements[topk_dot(q, keys, k)[1]]]
        del keys

        def search(queries: np.ndarray, ef: int) -> np.ndarray:
            efs = np.array([ef], np.int32)
            return self._walk(queries, k, efs, num_threads, None)[0].astype(np.int64)

        table = EffortTable.measure(q, truth, search, effort_grid(k, max(k, max_ef)))
        _core.release_free_memory()  # what measuring freed: the exact top-k's copies of the keys
        return table

    def _efforts(
        self, k: int, target_recall, num_threads: int
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """The ef of every calibration group for ``target_recall`` at this k (G,) and the groups'
        directions as the walk's queries (G, stored dim), measured again on the kept queries
        when the keys changed since (under the graph lock); and which of the two."""
        table, state = self._effort, "current"
        if table is None:
            raise HNSWError(
                "target_recall needs a calibration: call calibrate(held_out_queries, k) first"
            )
        if k != table.k:
            raise HNSWError(f"the index was calibrated for k = {table.k}, not {k}")
        try:
            target = as_target_recall(target_recall)
        except ValueError as e:
            raise HNSWError(str(e)) from None
        if self._effort_version != self._keys_version:
            with self._recalibrating:  # one search measures, the others wait for its table
                table, state = self._effort or table, "measured again"
                if self._effort_version != self._keys_version:
                    table = self._measured_again(table, num_threads)
                    self._effort, self._effort_version = table, self._keys_version
        # kept for the current table: a one-query search is short
        plan = self._walk_plan
        if plan is None or plan[0] is not table:
            plan = self._walk_plan = table, self._as_stored(table.groups.centroids), {}
        efs = plan[2].get(target)
        if efs is None:
            try:
                efs = np.maximum(table.efforts_for(target), k).astype(np.int32)
            except ValueError as e:
                raise HNSWError(str(e)) from None
            plan[2][target] = efs
        return efs, plan[1], state

    def _measured_again(self, table: EffortTable, num_threads: int) -> EffortTable:
        """The calibration measured again on the kept queries, after the keys changed."""
        queries = self._calibration_queries
        obstacle = None
        if queries is not None and shared(queries, self._edge_queries) > MAX_SHARED:
            obstacle = "fit_edges learned from its queries, whose recall overstates others'"
        check_measurable(self.auto_recalibrate, queries, obstacle)
        assert queries is not None  # checked above
        return self._measure(queries, table.k, self._calibration_max_ef, num_threads)

    def _walk(
        self, q: np.ndarray, k: int, ef: np.ndarray, num_threads: int, filter, groups=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search every query by the C++ core's walk of the graph (under the graph lock), walking
        by the predicted key under a query transform; only labels ``filter`` accepts are kept,
        when one is given. ``ef`` (int32, each at least k): one per query, one for all, or, with
        ``groups`` (G, stored dim), one per group: each query takes its group's."""
        graph, labels = self._require_ready(), self._labels.all
        rank = self._as_stored(q)
        walk = rank if self._query_transform is None else self._as_stored(self._predictor.keys(q))
        allowed = None if filter is None else (lambda e: filter(int(labels[e])))
        scores, found, computed = graph.search(
            walk, rank, k, ef, self._threads(num_threads), allowed, groups, labels
        )
        # Distances: the walk's code scores, then the exact scores of what it found.
        self.last_search_stats = {"distances": computed / len(q)}
        if found[:, -1].min() < 0:  # rows short of k end in -1
            raise HNSWError(
                f"the walk found fewer than k = {k} live elements"
                + ("" if filter is None else " the filter accepts")
                + "; search with a larger ef (set_ef, or calibrate with a larger max_ef)"
            )
        # labels are non-negative: as uint64 (hnswlib's type) without a copy; scores float32
        return found.view(np.uint64), np.subtract(np.float32(1), scores)
