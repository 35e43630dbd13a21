"""AmortizedHNSW: the hnswlib-facing class (building, adding, searching, deleting); its other
concerns are its parts, one module each (see ``amips_plugins.hnsw``)."""

from __future__ import annotations

import os
import tempfile
import threading

import hnswlib
import numpy as np

from .._freshness import warn_stale
from .._hnsw_file import check_graph, insertion_order
from .._sync import PicklesWithoutTransients, ReadWriteLock
from .._validation import as_int64, as_positive_int
from ..xbox import XboxTransform
from .calibration import Calibration
from .files import Files
from .settings import Settings
from .state import CONSTRUCTIONS, HNSWError, hnswlib_errors, rows
from .transform import Transform

__all__ = ["AmortizedHNSW"]


class AmortizedHNSW(Files, Calibration, Transform, Settings, PicklesWithoutTransients):
    """A drop-in for ``hnswlib.Index(space="ip", dim=dim)``.

    Parameters
    ----------
    space : str
        Only ``"ip"`` (inner product).
    dim : int
        Dimension of keys and queries.
    construction : str
        ``"ip"`` or ``"xbox"`` (see ``amips_plugins.hnsw``).
    sort_batches : bool
        Insert each batch of ``add_items`` in descending norm order.
    query_transform : model or None
        A one-output model predicting the best key.
    candidates : int
        Results gathered per query when searching with the predicted key (at least k).

    Notes
    -----
    Methods and return conventions follow hnswlib: ``init_index``, ``add_items``,
    ``knn_query -> (labels uint64 (n, k), distances float32 (n, k))``, ``set_ef``, ``ef``,
    ``get_current_count``, ``get_max_elements``, ``resize_index``, ``mark_deleted``,
    ``unmark_deleted``, ``save_index``, ``load_index``; the hnswlib object is ``.index``.
    Differences: bad input or state (wrong dimension, NaN, k above the element count, an empty
    or uninitialised index, an unknown label) raises ``HNSWError``, a ValueError that is also
    a RuntimeError; a batch that cannot fit is refused whole. Every method is safe to call from
    several threads: searches and adds run side by side, ``resize_index``, ``init_index`` and
    ``load_index`` wait for them.
    """

    # The graph copy for target_recall searches is made again when needed.
    _TRANSIENT = {
        "_add_lock": threading.Lock,
        "_graph_lock": ReadWriteLock,
        "_recalibrating": threading.Lock,
        "_walker": lambda: None,
    }

    def __init__(
        self,
        space: str = "ip",
        dim: int | None = None,
        *,
        construction: str = "ip",
        sort_batches: bool = True,
        query_transform=None,
        candidates: int = 100,
    ):
        if space != "ip":
            raise ValueError(
                f"AmortizedHNSW searches by inner product (space='ip'), got space={space!r}"
            )
        if construction not in CONSTRUCTIONS:
            raise ValueError(f"construction must be one of {CONSTRUCTIONS}, got {construction!r}")
        self.space, self.dim = space, as_positive_int(dim, "dim")
        self.construction, self.sort_batches = construction, bool(sort_batches)
        self.candidates = as_positive_int(candidates, "candidates")
        self.xbox = XboxTransform(self.dim) if construction == "xbox" else None
        self.index = hnswlib.Index(space="ip", dim=self._stored_dim)
        # the state's meaning: see HNSWState
        self._ready = False
        self._deleted = set()
        self._allow_replace_deleted = None
        self._add_lock = threading.Lock()
        self._graph_lock = ReadWriteLock()
        self._recalibrating = threading.Lock()
        self._walker = None
        self.last_search_stats = {}
        self._keys_version = self._keys_seen = self._effort_version = 0
        self._stale = set()
        self._calibration_queries, self._calibration_max_ef = None, 1000
        self.auto_recalibrate = True
        self.query_transform = query_transform  # also clears the calibration

    @classmethod
    def wrap(cls, index, *, xbox: bool = False, **kwargs) -> AmortizedHNSW:
        """Wrap an existing ``hnswlib.Index(space="ip")``, shared and not copied. With ``xbox``, the
        index holds Xbox-augmented keys of dimension d + 1 (its M is read from the stored keys)."""
        if getattr(index, "space", None) != "ip":
            raise TypeError(f"wrap needs an hnswlib.Index with space='ip', got {index!r}")
        self = cls(
            "ip",
            index.dim - 1 if xbox else index.dim,
            construction="xbox" if xbox else "ip",
            **kwargs,
        )
        self.index = index
        self._keys_seen = index.element_count
        self._ready = index.max_elements > 0
        if self._ready:  # which labels are deleted: only the saved graph tells
            with tempfile.TemporaryDirectory() as tmp:
                graph = os.path.join(tmp, "graph.bin")
                index.save_index(graph)
                with open(graph, "rb") as f:
                    self._deleted = set(check_graph(f.read(), index.dim).deleted_labels)
        if self.xbox is not None and index.element_count:
            stored = np.asarray(index.get_items(index.get_ids_list()), dtype=np.float32)
            self.xbox.load_state_dict(
                {
                    **self.xbox.state_dict(),
                    "count": len(stored),
                    "max_norm": float(np.sqrt((stored.astype(np.float64) ** 2).sum(1).max())),
                }
            )
        return self

    def init_index(
        self,
        max_elements: int,
        M: int = 16,
        ef_construction: int = 200,
        random_seed: int = 100,
        allow_replace_deleted: bool = False,
    ) -> None:
        max_elements = as_positive_int(max_elements, "max_elements")
        if as_positive_int(M, "M") < 2:
            raise HNSWError(f"M must be at least 2, got {M}")
        ef_construction = as_positive_int(ef_construction, "ef_construction")
        if not isinstance(random_seed, (int, np.integer)) or random_seed < 0:
            raise HNSWError(f"random_seed must be a non-negative integer, got {random_seed!r}")
        with self._graph_lock.writing():
            if self._ready:
                raise HNSWError("the index is already initialised")
            with hnswlib_errors():
                self.index.init_index(
                    max_elements=max_elements,
                    M=int(M),
                    ef_construction=ef_construction,
                    random_seed=int(random_seed),
                    allow_replace_deleted=bool(allow_replace_deleted),
                )
            self._allow_replace_deleted = bool(allow_replace_deleted)
            self._ready = True

    def add_items(
        self, data, ids=None, num_threads: int = -1, replace_deleted: bool = False
    ) -> None:
        """Insert keys ``data`` (n, dim) with labels ``ids`` (default: count .. count + n - 1); a
        label already present has its vector replaced, as in hnswlib. With ``replace_deleted``,
        every key takes the slot of a deleted element while there is one."""
        x = rows(data, self.dim)
        self._require_ready()
        if len(x) == 0:
            return
        with self._add_lock, self._graph_lock.reading():
            count, capacity = self.index.element_count, self.index.max_elements
            if ids is None:
                labels = np.arange(count, count + len(x), dtype=np.int64)
            else:
                labels = as_int64(np.reshape(ids, -1), "ids", ndim=1)  # (n,), (n, 1) or scalar
                if len(labels) != len(x) or (labels < 0).any():
                    raise HNSWError(
                        f"ids must be {len(x)} non-negative integers, got shape {labels.shape}"
                    )
            if replace_deleted and self._allow_replace_deleted is False:
                raise HNSWError("replace_deleted needs init_index(allow_replace_deleted=True)")
            if replace_deleted:  # every key takes a slot
                free, need = capacity - count + len(self._deleted), len(x)
            else:  # labels already present are updated in place
                fresh = (
                    len(x) if ids is None else (~np.isin(labels, self.index.get_ids_list())).sum()
                )
                free, need = capacity - count, int(fresh)
                revived = self._deleted.intersection(labels.tolist())
                if revived and self._allow_replace_deleted:
                    raise HNSWError(
                        f"labels {sorted(revived)[:5]} are deleted; with allow_replace_deleted "
                        "they can only come back through replace_deleted=True"
                    )
            if need > free:
                raise HNSWError(
                    f"adding {need} elements to {count} (of which {len(self._deleted)} deleted) "
                    f"exceeds max_elements = {capacity}; call resize_index first"
                )
            if self.sort_batches:
                order = insertion_order(x)
                x, labels = x[order], labels[order]
            stored = self.xbox.add_keys(x) if self.xbox is not None else x
            with hnswlib_errors():
                self.index.add_items(
                    stored, labels, num_threads=num_threads, replace_deleted=replace_deleted
                )
            if replace_deleted and self._deleted:
                kept = set(self.index.get_ids_list())
                self._deleted = {label for label in self._deleted if label in kept}
            self._deleted.difference_update(labels.tolist())
            self._keys_changed()

    def knn_query(
        self, data, k: int = 1, num_threads: int = -1, filter=None, *, target_recall=None
    ):
        """The k keys of largest inner product found for every query of ``data`` (n, dim).

        Returns ``(labels, distances)``: uint64 and float32 (n, k), nearest first, distances
        ``1 - q . x`` as hnswlib's 'ip' space reports them. With ``target_recall`` (after
        ``calibrate`` with this k), every query is searched at the ef its group of
        calibration queries needed for that mean recall@k, instead of the index's ef, by the
        C++ core's walk of the graph (no ``filter``); after a change of keys the calibration
        is measured again first (see ``calibrate``). ``last_search_stats["stale"]`` names the
        learned parts fitted on other keys (a ``StaleWarning`` is issued too).
        """
        q = rows(data, self.dim)
        k = as_positive_int(k, "k")
        self._require_ready()
        if target_recall is not None and filter is not None:
            raise HNSWError("target_recall searches take no filter")
        with self._graph_lock.reading(), hnswlib_errors():
            self._note_changes_from_cpp()
            stale = set(self._stale)
            if target_recall is not None:  # checked before anything else, as other errors are
                ef_per_query, state = self._ef_per_query(q, k, target_recall, num_threads)
            count = self._live_count()
            if k > count:
                raise HNSWError(f"k = {k} exceeds the {count} elements in the index")
            if len(q) == 0:
                result = np.empty((0, k), np.uint64), np.empty((0, k), np.float32)
                self.last_search_stats = {}
            elif target_recall is None:
                result = self._knn_query(q, k, num_threads, filter, count)
                self.last_search_stats = {}
            else:
                result = self._walk(q, k, ef_per_query, num_threads)
                self.last_search_stats["calibration"] = state
            self.last_search_stats["stale"] = sorted(stale)
        warn_stale(stale)
        return result

    def resize_index(self, new_size: int) -> None:
        new_size = as_positive_int(new_size, "new_size")
        self._require_ready()
        with self._graph_lock.writing():
            if new_size < self.index.element_count:
                raise HNSWError(
                    f"new_size = {new_size} is below the {self.index.element_count} elements"
                )
            with hnswlib_errors():
                self.index.resize_index(new_size)

    def mark_deleted(self, label: int) -> None:
        label = int(as_int64(np.atleast_1d(label), "label", ndim=1)[0])
        self._require_ready()
        with self._add_lock, self._graph_lock.reading(), hnswlib_errors():
            self.index.mark_deleted(label)
            self._deleted.add(label)
            self._keys_changed()

    def unmark_deleted(self, label: int) -> None:
        label = int(as_int64(np.atleast_1d(label), "label", ndim=1)[0])
        self._require_ready()
        with self._add_lock, self._graph_lock.reading(), hnswlib_errors():
            self.index.unmark_deleted(label)
            self._deleted.discard(label)
            self._keys_changed()

    def __repr__(self) -> str:
        return (
            f"AmortizedHNSW(dim={self.dim}, construction={self.construction!r}, "
            f"count={self.index.element_count}, ef={self.index.ef})"
        )
