"""What every part of ``AmortizedHNSW`` shares: the attributes it keeps beside the hnswlib
index, its error type, and the checks of input and state."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any

import numpy as np

from .._sync import ReadWriteLock
from .._validation import DimensionError, as_matrix
from ..effort import EffortTable
from ..xbox import XboxTransform

__all__ = ["CONSTRUCTIONS", "HNSWError", "HNSWState", "hnswlib_errors", "rows"]

CONSTRUCTIONS = ("ip", "xbox")


class HNSWError(ValueError, RuntimeError):
    """Bad input, or an index not in a state to do it: a ValueError, and also the RuntimeError
    hnswlib raises in these cases, so code written for either catches it."""


@contextmanager
def hnswlib_errors():
    """hnswlib's own RuntimeErrors (unknown label, already deleted, ...) as HNSWError."""
    try:
        yield
    except RuntimeError as e:
        if isinstance(e, HNSWError):
            raise
        raise HNSWError(str(e)) from None


def rows(data, dim: int) -> np.ndarray:
    """``data`` as rows (n, dim) float32; one vector (dim,) is a batch of one, as in hnswlib."""
    if np.ndim(data) == 1:
        data = data[None] if hasattr(data, "ndim") else [data]
    try:
        return as_matrix(data, "data", dim=dim)
    except DimensionError as e:  # hnswlib raises RuntimeError here
        raise HNSWError(str(e)) from None


class HNSWState:
    """The attributes an ``AmortizedHNSW`` keeps beside hnswlib's index, declared once for
    every part (index, settings, transform, calibration, files) it is made of."""

    space: str
    dim: int
    construction: str
    sort_batches: bool
    candidates: int
    xbox: XboxTransform | None
    index: Any  # the hnswlib.Index
    _ready: bool  # hnswlib crashes when used before init_index / load_index
    _deleted: set[int]  # labels marked deleted, for capacity checks
    _allow_replace_deleted: bool | None  # None: unknown (a wrapped index)
    # Adds, deletions and saves one at a time; searches beside them; whatever replaces or
    # reallocates the graph (init, resize, load) alone.
    _add_lock: threading.Lock
    _graph_lock: ReadWriteLock
    # (GraphSearch, label per element, element count) for target_recall searches; None when the
    # graph changed since it was made. Set and cleared under _add_lock.
    _walker: tuple | None
    last_search_stats: dict  # of the last target_recall search: distances per query
    _query_transform: Any
    _predictor: Any  # the query transform's key predictor
    _effort: EffortTable | None  # calibrate()'s, for target_recall; None: not calibrated
    # the keys the learned parts describe (see amips_plugins._freshness)
    _keys_version: int  # counts the changes of keys made through this class
    _keys_seen: int  # the element count after the last of them (another: a change in hnswlib)
    _stale: set[str]  # learned parts that could not follow a change of keys
    _effort_version: int  # _keys_version when the calibration was measured
    _calibration_queries: np.ndarray | None  # kept to measure it again after the keys change
    _calibration_max_ef: int  # its max_ef
    auto_recalibrate: bool  # after a change of keys: measure again (True) or raise (False)
    _recalibrating: threading.Lock  # one search measures again, the others wait for it

    def _keys_changed(self) -> None:
        """Note a change of keys: the walk's copy of the graph is made again, the calibration
        measured again at the next target_recall search, a query transform is stale."""
        self._walker = None
        self._keys_version += 1
        self._keys_seen = self.index.element_count
        if self._query_transform is not None:
            self._stale.add("query_transform")

    def _note_changes_from_cpp(self) -> None:
        """A search's check that no element was added to the hnswlib index behind this class."""
        if self.index.element_count != self._keys_seen:
            self._keys_changed()

    @property
    def _stored_dim(self) -> int:
        return self.dim + 1 if self.xbox is not None else self.dim

    def _require_ready(self) -> None:
        if not self._ready:
            raise HNSWError("the index is not initialised: call init_index or load_index first")

    def _live_count(self) -> int:
        count = self.index.get_current_count() - len(self._deleted)
        if count <= 0:
            raise HNSWError("the index is empty (or all deleted): add_items before searching")
        return count

    def _as_stored(self, q: np.ndarray) -> np.ndarray:
        return self.xbox.transform_queries(q) if self.xbox is not None else q
