"""What every part of ``AmortizedHNSW`` shares: the graph and the attributes kept beside it, its
error type, and the checks of input and state."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .. import _core
from .._sync import ReadWriteLock
from .._validation import DimensionError, as_matrix
from ..effort import EffortTable
from ..xbox import XboxTransform
from .labels import Labels

__all__ = ["CONSTRUCTIONS", "HNSWError", "HNSWState", "rows"]

CONSTRUCTIONS = ("ip", "xbox")


class HNSWError(ValueError, RuntimeError):
    """Bad input, or an index not in a state to do it: a ValueError, and also the RuntimeError
    hnswlib raises in these cases, so code written for either catches it."""


def rows(data, dim: int) -> np.ndarray:
    """``data`` as rows (n, dim) float32; one vector (dim,) is a batch of one, as in hnswlib."""
    if np.ndim(data) == 1:
        data = data[None] if hasattr(data, "ndim") else [data]
    try:
        return as_matrix(data, "data", dim=dim)
    except DimensionError as e:  # hnswlib raises RuntimeError here
        raise HNSWError(str(e)) from None


class HNSWState:
    """The graph of an ``AmortizedHNSW`` and the attributes kept beside it, declared once for
    every part (index, settings, transform, calibration, files) it is made of."""

    space: str
    dim: int
    construction: str
    sort_batches: bool
    fill_lists: bool
    walk_dims: int  # components of the walk's codes (0: every dimension)
    candidates: int
    xbox: XboxTransform | None
    # The graph: hnswlib's algorithm on the core (keys, their 8-bit codes, links); None before
    # init_index or load_index. Element i has label _labels.all[i].
    _graph: _core.GraphSearch | None
    _labels: Labels
    _max_elements: int
    _M: int
    _ef_construction: int
    _random_seed: int
    _ef: int
    _num_threads: int  # for calls with num_threads=-1; 0: all cores
    _deleted: set[int]  # labels marked deleted
    _allow_replace_deleted: bool
    # Searches share the graph; whatever changes it (add, delete, resize, init, load) waits for
    # them and runs alone.
    _graph_lock: ReadWriteLock
    last_search_stats: dict
    _query_transform: Any
    _predictor: Any  # the query transform's key predictor
    _effort: EffortTable | None  # calibrate()'s, for target_recall; None: not calibrated
    # the keys the learned parts describe (see amips_plugins._freshness)
    _keys_version: int  # counts the changes of keys (and of links: fit_edges)
    _stale: set[str]  # learned parts that could not follow a change of keys
    _effort_version: int  # _keys_version when the calibration was measured
    _calibration_queries: np.ndarray | None  # kept to measure it again after the keys change
    _calibration_max_ef: int  # its max_ef
    # fit_edges' queries' fingerprints (amips_plugins._held_out); None also in older pickles
    _edge_queries: np.ndarray | None = None
    auto_recalibrate: bool  # after a change of keys: measure again (True) or raise (False)
    _recalibrating: threading.Lock  # one search measures again, the others wait for it
    # (the calibration, its groups' directions as stored, {target_recall: efs per group})
    _walk_plan: tuple | None

    def _keys_changed(self) -> None:
        """Note a change of keys: the calibration is measured again at the next target_recall
        search, a query transform is stale."""
        self._keys_version += 1
        if self._query_transform is not None:
            self._stale.add("query_transform")

    def _install_settings(self, max_elements, M, ef_construction, random_seed, allow_replace):
        """An empty graph with hnswlib's settings."""
        self._max_elements, self._M = max_elements, M
        self._ef_construction, self._random_seed = ef_construction, random_seed
        self._allow_replace_deleted = bool(allow_replace)
        self._graph = _core.GraphSearch(self._stored_dim, M)
        self._graph.reserve(max_elements)
        self._labels = Labels(max_elements)
        self._deleted = set()
        self._edge_queries = None

    def _install_graph(self, graph, labels: np.ndarray, deleted: np.ndarray) -> None:
        """A graph read from a file or another index, with room for max_elements."""
        graph.reserve(self._max_elements)
        self._graph, self._labels = graph, Labels(max(self._max_elements, len(labels)))
        self._labels.append(labels)
        self._deleted = set(labels[deleted != 0].tolist())

    @property
    def _stored_dim(self) -> int:
        return self.dim + 1 if self.xbox is not None else self.dim

    def _require_ready(self) -> _core.GraphSearch:
        if self._graph is None:
            raise HNSWError("the index is not initialised: call init_index or load_index first")
        return self._graph

    def _live_count(self) -> int:
        count = self._require_ready().size - len(self._deleted)
        if count <= 0:
            raise HNSWError("the index is empty (or all deleted): add_items before searching")
        return count

    def _elements(self, labels) -> np.ndarray:
        """The elements of labels that are present and not deleted; HNSWError names one that
        is not."""
        labels = np.asarray(labels, np.int64)
        elements = self._labels.elements(labels)
        missing = elements < 0
        if self._deleted:  # per label, not per deleted one: deletions come one at a time
            deleted = self._deleted
            missing |= np.fromiter(
                (label in deleted for label in labels.tolist()), bool, len(labels)
            )
        if missing.any():
            raise HNSWError(f"Label not found: {int(labels[missing][0])}")
        return elements

    def _deleted_labels(self) -> np.ndarray:
        return np.fromiter(self._deleted, np.int64, len(self._deleted))

    def _threads(self, num_threads: int) -> int:
        """The core's thread count for a call's num_threads (-1: the index's setting)."""
        return self._num_threads if num_threads < 0 else num_threads

    def _as_stored(self, q: np.ndarray) -> np.ndarray:
        return self.xbox.transform_queries(q) if self.xbox is not None else q
