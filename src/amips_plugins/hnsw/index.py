"""AmortizedHNSW: the hnswlib-facing class (building, adding, searching, deleting); its other
concerns are its parts, one module each (see ``amips_plugins.hnsw``)."""

from __future__ import annotations

import threading

import numpy as np

from .. import _core
from .._freshness import warn_stale
from .._hnsw_file import graph_arrays, insertion_order
from .._sync import PicklesWithoutTransients, ReadWriteLock
from .._validation import as_int64, as_positive_int
from ..xbox import XboxTransform
from .basis import KEYS_PER_DIM, walk_basis, walk_dims_for
from .calibration import Calibration
from .edges import LearnedEdges
from .files import Files
from .labels import Labels
from .settings import Settings
from .state import CONSTRUCTIONS, HNSWError, rows
from .transform import Transform

__all__ = ["AmortizedHNSW"]


class AmortizedHNSW(
    Files, LearnedEdges, Calibration, Transform, Settings, PicklesWithoutTransients
):
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
    fill_lists : bool
        Fill the links hnswlib's heuristic leaves unused with the best candidates it passed over
        (a new element takes 2 M on level 0): the same memory, a denser graph (see
        ``amips_plugins.hnsw``). False: hnswlib's links.
    query_transform : model or None
        A one-output model predicting the best key.
    candidates : int
        Results gathered per query when searching with the predicted key (at least k).
    walk_dims : int or None
        Components of the walk's codes: the keys' leading principal directions (of their
        second moment, fitted once the graph holds 4 keys per dimension), so that a walk reads
        fewer bytes a key; the returned scores stay exact. None (the default): d / 2 where
        d >= 256, else every dimension (see ``amips_plugins.hnsw.basis``); 0: every dimension.

    Notes
    -----
    Methods and return conventions follow hnswlib: ``init_index``, ``add_items``,
    ``knn_query -> (labels uint64 (n, k), distances float32 (n, k))``, ``set_ef``, ``ef``,
    ``get_current_count``, ``get_max_elements``, ``resize_index``, ``mark_deleted``,
    ``unmark_deleted``, ``save_index``, ``load_index`` (hnswlib's own files, both ways);
    ``.index`` makes an ``hnswlib.Index`` of the same graph (a copy).
    The graph is hnswlib's algorithm run on this package's core, which keeps every key once
    with its 8-bit code (see ``amips_plugins.hnsw``). Differences: bad input or state (wrong
    dimension, NaN, k above the element count, an empty or uninitialised index, an unknown
    label) raises ``HNSWError``, a ValueError that is also a RuntimeError; a batch that cannot
    fit is refused whole. Every method is safe to call from several threads: searches run side
    by side, whatever changes the graph waits for them.
    """

    _TRANSIENT = {
        "_graph_lock": ReadWriteLock,
        "_recalibrating": threading.Lock,
        "_walk_plan": lambda: None,
    }

    def __init__(
        self,
        space: str = "ip",
        dim: int | None = None,
        *,
        construction: str = "ip",
        sort_batches: bool = True,
        fill_lists: bool = True,
        query_transform=None,
        candidates: int = 100,
        walk_dims: int | None = None,
    ):
        if space != "ip":
            raise ValueError(
                f"AmortizedHNSW searches by inner product (space='ip'), got space={space!r}"
            )
        if construction not in CONSTRUCTIONS:
            raise ValueError(f"construction must be one of {CONSTRUCTIONS}, got {construction!r}")
        self.space, self.dim = space, as_positive_int(dim, "dim")
        self.construction, self.sort_batches = construction, bool(sort_batches)
        self.fill_lists = bool(fill_lists)
        self.candidates = as_positive_int(candidates, "candidates")
        self.walk_dims = walk_dims_for(self.dim, walk_dims)
        self.xbox = XboxTransform(self.dim) if construction == "xbox" else None
        self._graph, self._labels = None, Labels()
        self._max_elements = self._M = self._ef_construction = self._random_seed = 0
        self._ef, self._num_threads = 10, 0
        self._deleted = set()
        self._allow_replace_deleted = False
        self._graph_lock = ReadWriteLock()
        self._recalibrating = threading.Lock()
        self._walk_plan = None
        self.last_search_stats = {}
        self._keys_version = self._effort_version = 0
        self._stale = set()
        self._calibration_queries, self._calibration_max_ef = None, 1000
        self._edge_queries = None
        self.auto_recalibrate = True
        self.query_transform = query_transform  # also clears the calibration

    @classmethod
    def wrap(cls, index, *, xbox: bool = False, **kwargs) -> AmortizedHNSW:
        """An AmortizedHNSW of the graph of an ``hnswlib.Index(space="ip")``, copied: the two
        are independent afterwards. With ``xbox``, the index holds Xbox-augmented keys of
        dimension d + 1 (its M is read from the stored keys)."""
        if getattr(index, "space", None) != "ip":
            raise TypeError(f"wrap needs an hnswlib.Index with space='ip', got {index!r}")
        self = cls(
            "ip",
            index.dim - 1 if xbox else index.dim,
            construction="xbox" if xbox else "ip",
            **kwargs,
        )
        if index.max_elements == 0:
            return self
        self._install_settings(index.max_elements, index.M, index.ef_construction, 100, False)
        self._ef, self._num_threads = index.ef, max(index.num_threads, 0)
        if index.element_count:
            arrays, labels = graph_arrays(index)
            basis = walk_basis(arrays["keys"], self.walk_dims)
            self._install_graph(_core.GraphSearch(**arrays, basis=basis), labels, arrays["deleted"])
        if self.xbox is not None and index.element_count:
            stored = self._graph.keys(np.arange(index.element_count))  # type: ignore[union-attr]
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
            if self._graph is not None:
                raise HNSWError("the index is already initialised")
            self._install_settings(
                max_elements, int(M), ef_construction, int(random_seed), allow_replace_deleted
            )

    def add_items(
        self, data, ids=None, num_threads: int = -1, replace_deleted: bool = False
    ) -> None:
        """Insert keys ``data`` (n, dim) with labels ``ids`` (default: count .. count + n - 1); a
        label already present has its vector replaced and is linked again where it now lies, as
        in hnswlib (a label given twice in a batch keeps its last vector). With
        ``replace_deleted``, new labels take the slots of deleted elements while there are
        some."""
        x = rows(data, self.dim)
        self._require_ready()
        if len(x) == 0:
            return
        with self._graph_lock.writing():
            graph = self._require_ready()  # as it stands once the lock is held
            count, capacity = graph.size, self._max_elements
            if ids is None:
                labels = np.arange(count, count + len(x), dtype=np.int64)
            else:
                labels = as_int64(np.reshape(ids, -1), "ids", ndim=1)  # (n,), (n, 1) or scalar
                if len(labels) != len(x) or (labels < 0).any():
                    raise HNSWError(
                        f"ids must be {len(x)} non-negative integers, got shape {labels.shape}"
                    )
                _, last = np.unique(labels[::-1], return_index=True)
                if len(last) < len(labels):
                    keep = np.sort(len(labels) - 1 - last)
                    x, labels = x[keep], labels[keep]
            if replace_deleted and not self._allow_replace_deleted:
                raise HNSWError("replace_deleted needs init_index(allow_replace_deleted=True)")
            elements = self._labels.elements(labels)
            present = elements >= 0
            revived = self._deleted.intersection(labels[present].tolist())
            if revived and self._allow_replace_deleted:
                raise HNSWError(
                    f"labels {sorted(revived)[:5]} are deleted; with allow_replace_deleted "
                    "they can only come back through replace_deleted=True"
                )
            slots = self._deleted_elements() if replace_deleted else np.empty(0, np.int64)
            fresh = int((~present).sum())
            if fresh - len(slots) > capacity - count:
                raise HNSWError(
                    f"adding {fresh} elements to {count} (of which {len(self._deleted)} deleted) "
                    f"exceeds max_elements = {capacity}; call resize_index first"
                )
            if self.sort_batches:
                order = insertion_order(x)
                x, labels, elements, present = (a[order] for a in (x, labels, elements, present))
            stored = self.xbox.add_keys(x) if self.xbox is not None else x
            threads = self._threads(num_threads)
            if present.any():  # hnswlib's updatePoint: in place, linked again
                graph.unmark_deleted(elements[present])
                graph.update(
                    elements[present], stored[present], self._ef_construction, self.fill_lists
                )
            new = np.flatnonzero(~present)
            reused, appended = new[: len(slots)], new[len(slots) :]
            if len(reused):
                taken = slots[: len(reused)]
                self._deleted.difference_update(self._labels.all[taken].tolist())
                self._labels.relabel(taken, labels[reused])
                graph.unmark_deleted(taken)
                graph.update(taken, stored[reused], self._ef_construction, self.fill_lists)
            if len(appended):
                if self.walk_dims and graph.basis is None:
                    graph = self._with_walk_basis(graph, stored[appended])
                graph.add(
                    stored[appended],
                    self._ef_construction,
                    self._random_seed,
                    threads,
                    self.fill_lists,
                )
                self._labels.append(labels[appended])
            self._deleted.difference_update(labels.tolist())
            self._keys_changed()

    def _with_walk_basis(self, graph: _core.GraphSearch, new_keys: np.ndarray):
        """The graph, with the walk's basis fitted on its keys and ``new_keys`` (about to be
        added) where there are enough of them (see ``basis.walk_basis``): a copy, installed."""
        if graph.size + len(new_keys) < KEYS_PER_DIM * self._stored_dim:
            return graph  # too few keys to fit it on (no copy of them made)
        held = graph.arrays() if graph.size else None
        keys = new_keys if held is None else np.concatenate([held["keys"], new_keys])
        basis = walk_basis(keys, self.walk_dims)
        if held is None:
            graph = _core.GraphSearch(self._stored_dim, self._M, basis=basis)
        else:  # its codes made again, their ranges spanning the keys along the basis
            del held["code_low"], held["code_scale"]
            graph = _core.GraphSearch(**held, basis=basis)
        graph.reserve(self._max_elements)
        self._graph = graph
        return graph

    def _deleted_elements(self) -> np.ndarray:
        return np.sort(self._labels.elements(self._deleted_labels()))

    def knn_query(
        self, data, k: int = 1, num_threads: int = -1, filter=None, *, target_recall=None
    ):
        """The k keys of largest inner product found for every query of ``data`` (n, dim).

        Returns ``(labels, distances)``: uint64 and float32 (n, k), nearest first, distances
        ``1 - q . x`` as hnswlib's 'ip' space reports them. The graph is walked on the C++
        core with a beam of the index's ef (at least k); with ``target_recall`` (after
        ``calibrate`` with this k), every query at the ef its group of calibration queries
        needed for that mean recall@k instead. After a change of keys the calibration is
        measured again first (see ``calibrate``). ``filter``: a callable on labels, as in
        hnswlib; only labels it accepts are returned. ``last_search_stats["stale"]`` names the
        learned parts fitted on other keys (a ``StaleWarning`` is issued too).

        The walk scores keys by their 8-bit codes and ranks the ef it keeps by their exact
        inner products: results can differ from hnswlib's on the same graph where scores tie
        or sit near the k-th.
        """
        q = rows(data, self.dim)
        k = as_positive_int(k, "k")
        self._require_ready()
        if filter is not None and not callable(filter):
            raise HNSWError(f"filter must be a callable on labels, got {filter!r}")
        with self._graph_lock.reading():
            stale = set(self._stale)
            state = groups = None
            if target_recall is not None:  # checked before anything else, as other errors are
                ef, groups, state = self._efforts(k, target_recall, num_threads)
            count = self._live_count()
            if k > count:
                raise HNSWError(f"k = {k} exceeds the {count} elements in the index")
            if target_recall is None:
                least = self.candidates if self._query_transform is not None else 0
                ef = np.array([max(self._ef, least, k)], np.int32)
            if len(q) == 0:
                result = np.empty((0, k), np.uint64), np.empty((0, k), np.float32)
                self.last_search_stats = {}
            else:
                result = self._walk(q, k, ef, num_threads, filter, groups)
            if state is not None:
                self.last_search_stats["calibration"] = state
            self.last_search_stats["stale"] = sorted(stale)
        warn_stale(stale)
        return result

    def resize_index(self, new_size: int) -> None:
        new_size = as_positive_int(new_size, "new_size")
        graph = self._require_ready()
        with self._graph_lock.writing():
            if new_size < graph.size:
                raise HNSWError(f"new_size = {new_size} is below the {graph.size} elements")
            graph.reserve(new_size)
            self._labels.resize(new_size)
            self._max_elements = new_size

    def mark_deleted(self, label: int) -> None:
        label = int(as_int64(np.atleast_1d(label), "label", ndim=1)[0])
        graph = self._require_ready()
        with self._graph_lock.writing():
            if label in self._deleted:
                raise HNSWError("The requested to delete element is already deleted")
            graph.mark_deleted(self._elements([label]))
            self._deleted.add(label)
            self._keys_changed()

    def unmark_deleted(self, label: int) -> None:
        label = int(as_int64(np.atleast_1d(label), "label", ndim=1)[0])
        graph = self._require_ready()
        with self._graph_lock.writing():
            element = self._labels.elements(np.array([label]))
            if element[0] < 0:
                raise HNSWError(f"Label not found: {label}")
            if label not in self._deleted:
                raise HNSWError("The requested to undelete element is not deleted")
            graph.unmark_deleted(element)
            self._deleted.discard(label)
            self._keys_changed()

    def __repr__(self) -> str:
        count = 0 if self._graph is None else self._graph.size
        return (
            f"AmortizedHNSW(dim={self.dim}, construction={self.construction!r}, "
            f"count={count}, ef={self._ef})"
        )
