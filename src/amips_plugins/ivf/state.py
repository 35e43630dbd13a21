"""What every part of ``AmortizedIVFBase`` shares: the attributes it keeps beside faiss's
IVF index, the registry of the faiss classes it wraps, and the checks of the index's state."""

from __future__ import annotations

from typing import Any

import faiss

from ..effort import EffortTable
from ..xbox import XboxTransform

__all__ = ["AMORTIZED", "FAISS_IVF", "IVFState", "NotTrainedError"]

FAISS_IVF = faiss.IndexIVF

# the faiss class of an index -> the class that adds the learned part to it (filled by classes.py)
AMORTIZED: dict[type, Any] = {}


class NotTrainedError(ValueError, RuntimeError):
    """The index must be trained first: a ValueError, and the RuntimeError faiss raises."""


class IVFState(faiss.IndexIVF):
    """The attributes an amortized IVF index keeps beside faiss's, declared once for every part
    (search, learned parts, calibration, files) that ``AmortizedIVFBase`` is made of."""

    # faiss refuses attributes its classes do not have; these are this class's own.
    _d = 0  # the key dimension (faiss's d is one more with xbox)
    xbox: XboxTransform | None = None
    probe_union: bool | None = None
    last_search_stats: dict = {}
    _lock: Any = None
    _query_transform: Any = None
    _router: Any = None
    # the routing protocol's objects for router and query_transform (amips_plugins.routing)
    _router_impl: Any = None
    _transform_impl: Any = None
    _centroids: Any = None  # the quantizer's centroids (search.Centroids), read after training
    _sizes: Any = None  # ((keys version, ntotal), list sizes) for fast-scan's count of codes
    _views: Any = None  # ((keys version, ntotal, lists' address), the core's views or None)
    # the keys the learned parts describe (see amips_plugins._freshness and .upkeep)
    _keys_version = 0  # counts the changes of keys made through this class
    _keys_seen = 0  # ntotal after the last of them: another ntotal means a change from C++
    _ledger: Any = None  # the fitted router's training queries and answers, kept as keys change
    _router_queries: Any = None  # fit_router's queries' fingerprints (amips_plugins._held_out)
    _stale: Any = None  # learned parts that could not follow a change of keys (set of names)
    # calibrate()'s, for target_recall; None: not calibrated
    # per router beam (None: a router without one) and re-ranking depth (k_factor)
    _effort: dict[tuple[int | None, float], EffortTable] | None = None
    _effort_version = 0  # _keys_version when it was measured
    _plans: Any = None  # (the tables above, {target: _plan's choice for it})
    _calibration_queries: Any = None  # kept to measure it again after the keys change
    _calibration_depth = 0  # its max_nprobe
    auto_recalibrate = True  # after a change of keys: measure again (True) or raise (False)
    _recalibrating: Any = None  # one search measures again, the others wait for it
    # the raw keys candidates are re-ranked from (a RawKeys; None: no re-ranking), and how many
    _raw_keys: Any = None
    _k_factor = 1.0

    def _require_trained(self) -> None:
        if not self.is_trained:
            raise NotTrainedError("train the index first (faiss's train)")

    def _require_keys(self) -> None:
        if self.ntotal == 0:
            raise ValueError("add keys to the index before training its learned parts")
