"""Per-query search effort for a declared mean recall@k (``target_recall``).

Calibration queries are put in groups of queries that need about the same effort: by direction
for a graph (``DirectionGroups``: queries pointing the same way meet the same part of the
index), by the k-th best score after the first lists for IVF (``ScoreBins``: a query whose
first lists already hold high scores has little left to find). Every group keeps its mean
recall@k at each effort of a grid (``ef`` for a graph, ``nprobe`` for IVF), and every effort a
cost. For a target, every group starts at the least effort, and the raise that gains the most
mean recall per added cost is taken until the groups' weighted mean recall meets the target:
easy groups keep a small effort, hard ones get a large one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import faiss
import numpy as np

from . import _core
from ._validation import as_positive_int, as_target_recall

__all__ = ["DirectionGroups", "EffortTable", "ScoreBins", "effort_grid", "recall_per_query"]

# Calibration queries per group; fewer make each group's recall too noisy to allocate by.
_QUERIES_PER_GROUP = 250
_MAX_GROUPS = 32


# measure() times every effort on at least this many queries.
_TIMED_AT_LEAST = 256


def effort_grid(start: int, stop: int, ratio: float = 1.25) -> np.ndarray:
    """Efforts from ``start`` to ``stop`` (both included), each about ``ratio`` times the last."""
    grid = [start]
    while grid[-1] < stop:
        grid.append(min(stop, max(grid[-1] + 1, round(grid[-1] * ratio))))
    return np.array(grid, np.int64)


def recall_per_query(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The fraction of each row of ``truth`` (n, k) that the same row of ``found`` holds."""
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=1)
    return hits.mean(axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def _num_groups(num_queries: int) -> int:
    return max(1, min(_MAX_GROUPS, num_queries // _QUERIES_PER_GROUP))


class DirectionGroups:
    """Queries (n, d) grouped by the nearest of ``centroids`` (G, d), unit directions."""

    def __init__(self, centroids):
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        if self.centroids.ndim != 2 or not np.all(np.isfinite(self.centroids)):
            raise ValueError("an inconsistent effort calibration (the groups' directions)")

    @classmethod
    def fit(
        cls, queries: np.ndarray, seed: int = 0, *, num_groups: int | None = None
    ) -> tuple[DirectionGroups, np.ndarray]:
        """Groups from spherical k-means of ``queries``, and each query's group; no group empty.
        ``num_groups``: at most this many (default: one per 250 queries, at most 32)."""
        directions = _unit(queries)
        if num_groups is None:
            num_groups = _num_groups(len(queries))
        num_groups = max(1, min(num_groups, len(queries)))
        if num_groups > 1:
            kmeans = faiss.Kmeans(queries.shape[1], num_groups, niter=20, seed=seed, spherical=True)
            kmeans.train(directions)
            centroids = kmeans.centroids
        else:
            centroids = _unit(directions.mean(axis=0, keepdims=True))
        groups = np.argmax(directions @ centroids.T, axis=1)
        used = np.flatnonzero(np.bincount(groups, minlength=len(centroids)))
        return cls(centroids[used]), np.searchsorted(used, groups)

    def __len__(self) -> int:
        return len(self.centroids)

    def of(self, queries: np.ndarray) -> np.ndarray:
        """The group of every query of ``queries`` (n, d), float32."""
        # On the core, not by a matmul: OpenBLAS's threads spin on after one, and took a fifth
        # of the two cores from the graph walk that follows (GloVe, 10k queries).
        return _core.topk_dot(queries, self.centroids, 1, 0)[1][:, 0]

    def state_dict(self) -> dict:
        return {"centroids": self.centroids.tolist()}


class ScoreBins:
    """Queries grouped by one score each (n,): bins between increasing ``edges`` (G - 1,)."""

    def __init__(self, edges):
        self.edges = np.asarray(edges, np.float64)
        if not (
            self.edges.ndim == 1
            and np.all(np.isfinite(self.edges))
            and np.all(np.diff(self.edges) > 0)
        ):
            raise ValueError("an inconsistent effort calibration (the groups' score bins)")

    @classmethod
    def fit(cls, scores: np.ndarray) -> tuple[ScoreBins, np.ndarray]:
        """Bins between quantiles of ``scores``, and each score's bin; no bin empty."""
        finite = scores[np.isfinite(scores)]
        quantiles = np.linspace(0, 1, _num_groups(len(scores)) + 1)[1:-1]
        edges = np.unique(np.quantile(finite, quantiles)) if len(finite) else np.empty(0)
        bins = np.searchsorted(edges, scores, side="right")
        used = np.unique(bins)
        # an empty bin joins the one below it: only the lower edges of used bins stay
        edges = edges[used[1:] - 1]
        return cls(edges), np.searchsorted(edges, scores, side="right")

    def __len__(self) -> int:
        return len(self.edges) + 1

    def of(self, scores: np.ndarray) -> np.ndarray:
        """The bin of every score (n,)."""
        return np.searchsorted(self.edges, scores, side="right")

    def state_dict(self) -> dict:
        return {"edges": self.edges.tolist()}


class EffortTable:
    """Groups' mean recall@k per effort, and the cost of each effort.

    ``efforts`` (E,) increasing; ``groups`` a ``DirectionGroups`` or ``ScoreBins`` of G
    groups; ``weights`` (G,) the share of calibration queries in each group; ``recall`` (G, E)
    each group's mean recall@k at each effort; ``cost`` (E,) or (G, E) per query, in any unit
    (only their ratios matter).
    """

    def __init__(self, k: int, efforts, groups, weights, recall, cost):
        self.k = as_positive_int(k, "k")
        self.efforts = np.asarray(efforts, np.int64)
        self.groups = groups
        self.weights = np.asarray(weights, np.float64)
        self.recall = np.asarray(recall, np.float64)
        self.cost = np.asarray(cost, np.float64)
        g, e = self.recall.shape if self.recall.ndim == 2 else (0, 0)
        if not (
            e >= 1
            and self.efforts.shape == (e,)
            and np.all(np.diff(self.efforts) > 0)
            and self.efforts[0] >= 1
            and len(groups) == g
            and self.weights.shape == (g,)
            and np.all(self.weights >= 0)
            and abs(self.weights.sum() - 1) < 1e-6
            and np.all((self.recall >= 0) & (self.recall <= 1))
            and self.cost.shape in ((e,), (g, e))
            and np.all(self.cost > 0)
        ):
            raise ValueError("an inconsistent effort calibration (shapes, order or ranges)")
        self._chosen: dict[float, tuple[np.ndarray, float]] = {}  # target: efforts, mean cost
        self.max_recall = float(self.weights @ self.recall[:, -1])  # at the largest effort

    @classmethod
    def from_queries(cls, k: int, efforts, groups, group_of_query, recall, cost) -> EffortTable:
        """A table from per-query measurements: ``group_of_query`` (n,) in ``groups`` (none
        empty), ``recall`` (n, E) each query's recall@k at each effort, ``cost`` (E,) per query
        or (n, E) each query's."""
        size = np.bincount(group_of_query, minlength=len(groups)).astype(np.float64)

        def group_means(per_query: np.ndarray) -> np.ndarray:
            columns = [np.bincount(group_of_query, c, len(groups)) for c in per_query.T]
            return np.stack(columns, axis=1) / size[:, None]

        cost = np.asarray(cost, np.float64)
        return cls(
            k,
            efforts,
            groups,
            size / size.sum(),
            group_means(recall),
            group_means(cost) if cost.ndim == 2 else cost,
        )

    @classmethod
    def measure(
        cls,
        queries: np.ndarray,
        truth: np.ndarray,
        search: Callable[[np.ndarray, int], np.ndarray],
        efforts: np.ndarray,
        *,
        stop_at: float = 0.999,
        seed: int = 0,
    ) -> EffortTable:
        """Run ``search(queries, effort) -> ids (n, k)`` at every effort of the grid, timed, until
        the mean recall against ``truth`` (n, k) reaches ``stop_at``; group the queries by
        direction. The cost is seconds per query.

        A query that has found all of its truth is not searched again at larger efforts: it
        counts as found there (a larger beam keeps what a smaller one found, bar ties and the
        codes' rounding), so the largest efforts, the dearest, run on the few queries that
        still miss answers."""
        groups, group_of_query = DirectionGroups.fit(queries, seed)
        recall, seconds = [], []
        missing = np.arange(len(queries))  # the queries not yet at recall 1
        batch = np.arange(min(len(queries), _TIMED_AT_LEAST))
        for effort in efforts:
            # with found ones beside the few missing, so that the time per query is a batch's
            searched = missing if len(missing) >= len(batch) else np.union1d(missing, batch)
            start = time.perf_counter()
            found = search(queries[searched], int(effort))
            seconds.append((time.perf_counter() - start) / len(searched))
            recall.append(np.ones(len(queries)))
            rows = np.searchsorted(searched, missing)
            recall[-1][missing] = recall_per_query(found[rows], truth[missing])
            missing = missing[recall[-1][missing] < 1]
            if recall[-1].mean() >= stop_at or len(missing) == 0:
                break
        # Timings of single runs are noisy: the cost is a least-squares line in the effort.
        tried = efforts[: len(seconds)].astype(np.float64)
        if len(tried) > 1:
            slope, intercept = np.polyfit(tried, seconds, 1)
            floor = min(seconds) / 4
            cost = np.maximum(intercept + slope * tried, floor)
            cost = np.maximum.accumulate(cost)  # more effort never costs less
        else:
            cost = np.array(seconds)
        return cls.from_queries(
            truth.shape[1], tried, groups, group_of_query, np.stack(recall, axis=1), cost
        )

    def curve(self) -> dict[int, float]:
        """The mean recall@k over all calibration queries at each effort of the grid."""
        return dict(zip(self.efforts.tolist(), (self.weights @ self.recall).tolist()))

    def group_of(self, features: np.ndarray) -> np.ndarray:
        """The group of every query (n,), from its queries (direction groups) or scores (bins)."""
        return self.groups.of(features)

    def efforts_for(self, target_recall: float) -> np.ndarray:
        """Each group's effort (G,) meeting ``target_recall`` in weighted mean at least cost."""
        target = as_target_recall(target_recall)
        if target > self.max_recall + 1e-12:
            raise ValueError(
                f"target_recall {target} is above the calibrated maximum "
                f"{self.max_recall:.4f} (at {self.efforts[-1]}, the largest effort measured)"
            )
        return self._chosen_for(target)[0]

    def cost_for(self, target_recall: float) -> float:
        """The mean cost per query of ``efforts_for(target_recall)``."""
        return self._chosen_for(as_target_recall(target_recall))[1]

    def _chosen_for(self, target: float) -> tuple[np.ndarray, float]:
        if target not in self._chosen:
            picked = self._choice(target)
            cost = np.broadcast_to(self.cost, self.recall.shape)
            mean_cost = float(self.weights @ cost[np.arange(len(picked)), picked])
            self._chosen[target] = (self.efforts[picked], mean_cost)
        return self._chosen[target]

    def _choice(self, target: float) -> np.ndarray:
        """Indices into the grid, per group: from the least effort everywhere, raise the group
        whose raise gains the most mean recall per added cost, until the target is met."""
        rows = np.arange(len(self.recall))
        picked = np.zeros(len(rows), np.int64)
        later = np.arange(len(self.efforts))[None, :] > picked[:, None]
        cost = np.broadcast_to(self.cost, self.recall.shape)
        while self.weights @ self.recall[rows, picked] < target - 1e-12:
            gain = self.recall - self.recall[rows, picked][:, None]
            added = cost - cost[rows, picked][:, None]
            rate = np.where(later & (gain > 0), gain / np.maximum(added, 1e-30), -np.inf)
            if not np.isfinite(rate.max()):  # rounding: every group is at its best already
                break
            group, effort = np.unravel_index(np.argmax(rate), rate.shape)
            picked[group] = effort
            later[group] = np.arange(len(self.efforts)) > effort
        return picked

    def state_dict(self) -> dict:
        """The table as plain lists (JSON)."""
        return {
            "k": self.k,
            "efforts": self.efforts.tolist(),
            **self.groups.state_dict(),
            "weights": self.weights.tolist(),
            "recall": self.recall.tolist(),
            "cost": self.cost.tolist(),
        }

    @classmethod
    def from_state_dict(cls, state: dict, dim: int) -> EffortTable:
        """A table from ``state_dict``, checked (ValueError); direction groups must have the
        index's ``dim``."""
        if "edges" in state:
            groups: DirectionGroups | ScoreBins = ScoreBins(state["edges"])
        else:
            groups = DirectionGroups(state["centroids"])
            if groups.centroids.shape[1] != dim:
                raise ValueError(
                    f"the calibration has dimension {groups.centroids.shape[1]}, the index {dim}"
                )
        names = ("k", "efforts", "weights", "recall", "cost")
        return cls(groups=groups, **{name: state[name] for name in names})
