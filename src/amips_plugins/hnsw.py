"""AmortizedHNSW: an ``hnswlib.Index(space="ip")`` drop-in with a choice of construction space,
norm-ordered insertion and an optional learned query transform.

Construction spaces (the graph is always searched by inner product, so distances are hnswlib's
``1 - q . x`` on the original vectors):

- ``"ip"``: the raw keys, as ``hnswlib.Index(space="ip")`` builds them;
- ``"xbox"``: the Xbox-augmented keys [x, sqrt(M^2 - |x|^2)], M the largest norm so far (grown
  batch by batch). All augmented keys share the norm M, so hnswlib's inner-product distance
  between them orders neighbours exactly as L2 does, and a query [q, 0] still scores q . x.

``add_items`` inserts every batch in descending norm order by default: large-norm keys are the
answers of most queries, and linking them first builds a better graph (Vespa saw the same), so a
batch arriving in random order gives the graph a sorted bulk load gives.

With a ``query_transform`` (a one-output KeyNet, SupportNet or MaxAffineNet), the graph is
searched with the predicted best key, ``candidates`` results are gathered and rescored exactly
with q on the C++ core, and the top k returned.

``calibrate`` measures the ef that held-out queries need, by group of query directions (see
:mod:`.effort`); then ``knn_query(..., target_recall=r)`` searches every query at its group's ef.
Those searches walk hnswlib's graph on the C++ core (:class:`._core.GraphSearch`): a copy of its
links with the keys in 8-bit codes for the walk, the ef keys found ranked again by their exact
inner product. The copy is made on the first such search after the keys change.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import zipfile
from contextlib import contextmanager

import hnswlib
import numpy as np

from ._hnsw_file import check_graph, copy_graph, insertion_order
from ._io import atomic_path, read_archive, scratch_path
from ._sync import PicklesWithoutTransients, ReadWriteLock
from ._validation import MAX_THREADS, DimensionError, as_int64, as_matrix, as_positive_int
from .effort import EffortTable, effort_grid
from .exact import rescore, topk_dot, topk_rows
from .xbox import XboxTransform

__all__ = ["AmortizedHNSW", "HNSWError"]


_FORMAT = "amips_plugins.AmortizedHNSW"  # read back by _io.read_archive
_VERSION = 1
CONSTRUCTIONS = ("ip", "xbox")


class HNSWError(ValueError, RuntimeError):
    """Bad input, or an index not in a state to do it: a ValueError, and also the RuntimeError
    hnswlib raises in these cases, so code written for either catches it."""


@contextmanager
def _hnswlib_errors():
    """hnswlib's own RuntimeErrors (unknown label, already deleted, ...) as HNSWError."""
    try:
        yield
    except RuntimeError as e:
        if isinstance(e, HNSWError):
            raise
        raise HNSWError(str(e)) from None


def _read_graph(graph: bytes, dim: int, max_elements: int, allow_replace_deleted: bool):
    """An hnswlib 'ip' index read from the bytes of its file, checked first (see
    :mod:`._hnsw_file`), and the labels it marks deleted."""
    info = check_graph(graph, dim)
    index = hnswlib.Index(space="ip", dim=dim)
    with tempfile.TemporaryDirectory() as tmp:  # the file's own folder may be read-only
        copy = os.path.join(tmp, "graph.bin")
        with open(copy, "wb") as f:
            f.write(graph)
        index.load_index(
            copy, max_elements=max_elements, allow_replace_deleted=allow_replace_deleted
        )
    return index, set(info.deleted_labels)


def _rows(data, dim: int) -> np.ndarray:
    """``data`` as rows (n, dim) float32; one vector (dim,) is a batch of one, as in hnswlib."""
    if np.ndim(data) == 1:
        data = data[None] if hasattr(data, "ndim") else [data]
    try:
        return as_matrix(data, "data", dim=dim)
    except DimensionError as e:  # hnswlib raises RuntimeError here
        raise HNSWError(str(e)) from None


class AmortizedHNSW(PicklesWithoutTransients):
    """A drop-in for ``hnswlib.Index(space="ip", dim=dim)``.

    Parameters
    ----------
    space : only ``"ip"`` (inner product)
    dim : dimension of keys and queries
    construction : ``"ip"`` or ``"xbox"`` (see the module docstring)
    sort_batches : insert each batch of ``add_items`` in descending norm order
    query_transform : one-output model predicting the best key, or None
    candidates : results gathered per query when searching with the predicted key (at least k)

    Methods and return conventions follow hnswlib: ``init_index``, ``add_items``,
    ``knn_query -> (labels uint64 (n, k), distances float32 (n, k))``, ``set_ef``, ``ef``,
    ``get_current_count``, ``get_max_elements``, ``resize_index``, ``mark_deleted``,
    ``unmark_deleted``, ``save_index``, ``load_index``; the hnswlib object is ``.index``.
    Differences: bad input or state (wrong dimension, NaN, k above the element count, an empty
    or uninitialised index, an unknown label) raises :class:`HNSWError`, a ValueError that is also
    a RuntimeError; a batch that cannot fit is refused whole. Every method is safe to call from
    several threads: searches and adds run side by side, ``resize_index``, ``init_index`` and
    ``load_index`` wait for them.
    """

    # The graph copy for target_recall searches is made again when needed.
    _TRANSIENT = {
        "_add_lock": threading.Lock,
        "_graph_lock": ReadWriteLock,
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
        self._ready = False  # hnswlib crashes when used before init_index / load_index
        self._deleted: set[int] = set()  # labels marked deleted, for capacity checks
        self._allow_replace_deleted: bool | None = None  # None: unknown (a wrapped index)
        # Adds, deletions and saves one at a time; searches beside them; whatever replaces or
        # reallocates the graph (init, resize, load) alone.
        self._add_lock = threading.Lock()
        self._graph_lock = ReadWriteLock()
        # (GraphSearch, label per element, element count) for target_recall searches; None when
        # the graph changed since it was made. Set and cleared under _add_lock.
        self._walker: tuple | None = None
        self.last_search_stats: dict = {}  # of the last target_recall search: distances per query
        self.query_transform = query_transform  # also clears the calibration

    @property
    def _stored_dim(self) -> int:
        return self.dim + 1 if self.xbox is not None else self.dim

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

    # --- learned part -------------------------------------------------------------------------
    @property
    def query_transform(self):
        return self._query_transform

    @query_transform.setter
    def query_transform(self, model) -> None:
        if model is not None:
            from .learn.transform import key_predictor

            self._predictor = key_predictor(model, self.dim)
        self._query_transform = model
        self._effort: EffortTable | None = None  # measured with another search path

    def fit_query_transform(self, keys, train_queries, model=None, **fit_kwargs) -> list[dict]:
        """Train ``model`` (default: a residual ``KeyNet(dim)``) on ``keys`` (those added), use it;
        ``fit_kwargs`` go to :func:`amips_plugins.fit`; returns its history."""
        from .learn.models import KeyNet
        from .learn.training import fit

        model = KeyNet(self.dim) if model is None else model
        history = fit(model, keys, train_queries, **fit_kwargs)
        self.query_transform = model
        return history

    # --- hnswlib's methods --------------------------------------------------------------------
    def _require_ready(self) -> None:
        if not self._ready:
            raise HNSWError("the index is not initialised: call init_index or load_index first")

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
            with _hnswlib_errors():
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
        x = _rows(data, self.dim)
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
            with _hnswlib_errors():
                self.index.add_items(
                    stored, labels, num_threads=num_threads, replace_deleted=replace_deleted
                )
            if replace_deleted and self._deleted:
                kept = set(self.index.get_ids_list())
                self._deleted = {label for label in self._deleted if label in kept}
            self._deleted.difference_update(labels.tolist())
            self._walker = None

    def knn_query(
        self, data, k: int = 1, num_threads: int = -1, filter=None, *, target_recall=None
    ):
        """The k keys of largest inner product found for every query of ``data`` (n, dim).

        Returns ``(labels, distances)``: uint64 and float32 (n, k), nearest first, distances
        ``1 - q . x`` as hnswlib's 'ip' space reports them. With ``target_recall`` (after
        :meth:`calibrate` with this k), every query is searched at the ef its group of
        calibration queries needed for that mean recall@k, instead of the index's ef, by the
        C++ core's walk of the graph (no ``filter``).
        """
        q = _rows(data, self.dim)
        k = as_positive_int(k, "k")
        self._require_ready()
        ef_per_query = None if target_recall is None else self._ef_per_query(q, k, target_recall)
        if ef_per_query is not None and filter is not None:
            raise HNSWError("target_recall searches take no filter")
        with self._graph_lock.reading(), _hnswlib_errors():
            count = self._live_count()
            if k > count:
                raise HNSWError(f"k = {k} exceeds the {count} elements in the index")
            if len(q) == 0:
                return np.empty((0, k), np.uint64), np.empty((0, k), np.float32)
            if ef_per_query is None:
                return self._knn_query(q, k, num_threads, filter, count)
            return self._walk(q, k, ef_per_query, num_threads)

    def _live_count(self) -> int:
        count = self.index.get_current_count() - len(self._deleted)
        if count <= 0:
            raise HNSWError("the index is empty (or all deleted): add_items before searching")
        return count

    def _walk(self, q: np.ndarray, k: int, ef_per_query: np.ndarray, num_threads: int):
        """Search every query at its own ef by the C++ core's walk of a copy of the graph (made
        anew when the keys changed), walking by the predicted key under a query transform."""
        with self._add_lock:
            if self._walker is None or self._walker[2] != self.index.element_count:
                self._walker = (*copy_graph(self.index), self.index.element_count)
            graph, labels, _ = self._walker
        walk = q if self._query_transform is None else self._predictor.keys(q)
        ef = np.maximum(ef_per_query, k).astype(np.int32)
        scores, elements, scored = graph.search(
            self._as_stored(walk), self._as_stored(q), k, ef, max(num_threads, 0)
        )
        # Distances: the walk's code scores, and the exact scores of the ef it found.
        self.last_search_stats = {"distances": (scored + ef.sum()) / len(q)}
        if (elements < 0).any():
            raise HNSWError(
                f"the walk found fewer than k = {k} live elements; calibrate with a larger max_ef"
            )
        return labels[elements].astype(np.uint64), (1.0 - scores).astype(np.float32)

    def _knn_query(self, q, k, num_threads, filter, count):
        if self._query_transform is None:
            return self.index.knn_query(
                self._as_stored(q), k=k, num_threads=num_threads, filter=filter
            )
        # Search with the predicted key, then rank the candidates by their inner product with q.
        width = min(max(k, self.candidates), count)
        labels, _ = self.index.knn_query(
            self._as_stored(self._predictor.keys(q)),
            k=width,
            num_threads=num_threads,
            filter=filter,
        )
        vectors = np.asarray(self.index.get_items(labels.ravel()), dtype=np.float32)[:, : self.dim]
        scores = rescore(q, vectors, np.arange(labels.size, dtype=np.int64).reshape(labels.shape))
        _, best = topk_rows(scores, k)
        top = np.take_along_axis(scores, best, axis=1)
        return np.take_along_axis(labels, best, axis=1), (1.0 - top).astype(np.float32)

    # --- declarative recall -------------------------------------------------------------------
    def calibrate(
        self, queries, k: int = 10, *, max_ef: int = 1000, num_threads: int = -1
    ) -> dict[int, float]:
        """Measure the ef queries like ``queries`` (n, dim) need: their recall@k against the exact
        top-k of the keys in the index at ef = k, 1.25 k, ... up to ``max_ef`` (stopping once the
        mean recall reaches 0.999), by group of query directions, and each ef's seconds per query.
        Then ``knn_query(data, k, target_recall=r)`` gives every query the ef of its group, so
        that the mean recall@k over queries like these is r at the least time.

        Use queries drawn as the searched ones will be (not those a query transform was fitted
        on). Setting a query transform clears the calibration; calibrate again after the keys
        change much. Searches wait while it runs. Returns the mean recall@k per ef measured.
        """
        q = _rows(queries, self.dim)
        k = as_positive_int(k, "k")
        max_ef = as_positive_int(max_ef, "max_ef")
        self._require_ready()
        if len(q) == 0:
            raise HNSWError("calibrate needs at least one query")
        with self._graph_lock.writing(), _hnswlib_errors():
            count = self._live_count()
            if k > count:
                raise HNSWError(f"k = {k} exceeds the {count} elements in the index")
            labels = np.array(sorted(set(self.index.get_ids_list()) - self._deleted), np.int64)
            keys = np.asarray(self.index.get_items(labels), dtype=np.float32)[:, : self.dim]
            truth = labels[topk_dot(q, keys, k)[1]]
            del keys

            def search(queries: np.ndarray, ef: int) -> np.ndarray:
                efs = np.full(len(queries), ef, np.int32)
                return self._walk(queries, k, efs, num_threads)[0].astype(np.int64)

            table = EffortTable.measure(q, truth, search, effort_grid(k, max(k, max_ef)))
            self._effort = table
        return table.curve()

    def _ef_per_query(self, q: np.ndarray, k: int, target_recall) -> np.ndarray:
        """The ef of every query's calibration group for ``target_recall`` at this k."""
        table = self._effort
        if table is None:
            raise HNSWError(
                "target_recall needs a calibration: call calibrate(held_out_queries, k) first"
            )
        if k != table.k:
            raise HNSWError(f"the index was calibrated for k = {table.k}, not {k}")
        try:
            return table.efforts_for(target_recall)[table.group_of(q)]
        except ValueError as e:
            raise HNSWError(str(e)) from None

    def _as_stored(self, q: np.ndarray) -> np.ndarray:
        return self.xbox.transform_queries(q) if self.xbox is not None else q

    @property
    def num_threads(self) -> int:
        """Threads a call with ``num_threads=-1`` uses (hnswlib's default: all cores)."""
        return self.index.num_threads

    @num_threads.setter
    def num_threads(self, value: int) -> None:
        self.set_num_threads(value)

    def set_num_threads(self, num_threads: int) -> None:
        """Threads for calls with ``num_threads=-1``; 0 or less: all cores, as in hnswlib."""
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
            raise TypeError(f"num_threads must be an integer, got {num_threads!r}")
        if num_threads > MAX_THREADS:
            raise HNSWError(f"num_threads must be at most {MAX_THREADS}, got {num_threads}")
        self.index.set_num_threads(max(int(num_threads), 0))

    def index_file_size(self) -> int:
        """Bytes of the hnswlib graph as hnswlib saves it (:meth:`save_index` adds the config)."""
        self._require_ready()
        with self._graph_lock.reading():
            return self.index.index_file_size()

    def set_ef(self, ef: int) -> None:
        ef = as_positive_int(ef, "ef")
        self._require_ready()
        self.index.set_ef(ef)

    @property
    def ef(self) -> int:
        return self.index.ef

    @ef.setter
    def ef(self, value: int) -> None:
        self.set_ef(value)

    @property
    def M(self) -> int:
        return self.index.M

    @property
    def ef_construction(self) -> int:
        return self.index.ef_construction

    @property
    def max_elements(self) -> int:
        return self.index.max_elements

    @property
    def element_count(self) -> int:
        return self.index.element_count

    def get_current_count(self) -> int:
        self._require_ready()
        return self.index.get_current_count()

    def get_max_elements(self) -> int:
        self._require_ready()
        return self.index.get_max_elements()

    def get_ids_list(self) -> list[int]:
        self._require_ready()
        with self._graph_lock.reading():
            return self.index.get_ids_list()

    def get_items(self, ids=None, return_type: str = "numpy"):
        """The original (not augmented) vectors of ``ids`` (a sequence; default: every label, in
        label order): (n, dim) float32, or with ``return_type="list"`` a list of lists."""
        if return_type not in ("numpy", "list"):
            raise HNSWError(f"return_type must be 'numpy' or 'list', got {return_type!r}")
        items = self._get_items(ids)
        return items.tolist() if return_type == "list" else items

    def _get_items(self, ids) -> np.ndarray:
        self._require_ready()
        with self._graph_lock.reading(), _hnswlib_errors():
            if ids is None:  # in label order: the same for every copy of the index
                ids = sorted(self.index.get_ids_list())
            if np.ndim(ids) == 0:  # as in hnswlib
                raise HNSWError(f"ids must be a sequence of labels, got {ids!r}")
            labels = as_int64(np.reshape(ids, -1), "ids", ndim=1)  # knn_query's (n, k) too
            if len(labels) == 0:
                return np.empty((0, self.dim), np.float32)
            items = self.index.get_items(labels)
        return np.asarray(items, dtype=np.float32)[:, : self.dim]

    def resize_index(self, new_size: int) -> None:
        new_size = as_positive_int(new_size, "new_size")
        self._require_ready()
        with self._graph_lock.writing():
            if new_size < self.index.element_count:
                raise HNSWError(
                    f"new_size = {new_size} is below the {self.index.element_count} elements"
                )
            with _hnswlib_errors():
                self.index.resize_index(new_size)

    def mark_deleted(self, label: int) -> None:
        label = int(as_int64(np.atleast_1d(label), "label", ndim=1)[0])
        self._require_ready()
        with self._add_lock, self._graph_lock.reading(), _hnswlib_errors():
            self.index.mark_deleted(label)
            self._deleted.add(label)
            self._walker = None

    def unmark_deleted(self, label: int) -> None:
        label = int(as_int64(np.atleast_1d(label), "label", ndim=1)[0])
        self._require_ready()
        with self._add_lock, self._graph_lock.reading(), _hnswlib_errors():
            self.index.unmark_deleted(label)
            self._deleted.discard(label)
            self._walker = None

    # --- persistence --------------------------------------------------------------------------
    def save_index(self, path) -> None:
        """Write the hnswlib graph, the Xbox state, the query transform and the config to one file
        (a zip archive), atomically."""
        self._require_ready()
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "dim": self.dim,
            "construction": self.construction,
            "sort_batches": self.sort_batches,
            "candidates": self.candidates,
            "ef": self.index.ef,
            "allow_replace_deleted": bool(self._allow_replace_deleted),
            "xbox": None if self.xbox is None else self.xbox.state_dict(),
            "calibration": None if self._effort is None else self._effort.state_dict(),
        }
        with atomic_path(path) as out, scratch_path(path, "graph") as graph:
            with self._add_lock, self._graph_lock.reading():
                self.index.save_index(str(graph))
            with zipfile.ZipFile(out, "w") as z:
                z.writestr("meta.json", json.dumps(meta))
                z.write(graph, "graph.bin")
                if self._query_transform is not None:
                    z.writestr("query_transform.pt", self._query_transform.to_bytes())

    def load_index(self, path, max_elements: int = 0, allow_replace_deleted: bool = False) -> None:
        """Restore an index written by :meth:`save_index`, or a plain hnswlib file written by
        ``hnswlib.Index.save_index`` (space 'ip', this ``dim``), into this object. The graph is
        checked before hnswlib reads it (see :mod:`._hnsw_file`); a foreign, corrupt or
        inconsistent file raises :class:`HNSWError`. ``allow_replace_deleted`` as in hnswlib (a
        saved AmortizedHNSW also keeps the setting it was built with)."""
        max_elements = int(as_int64(np.atleast_1d(max_elements), "max_elements", ndim=1)[0])
        try:
            if zipfile.is_zipfile(path):
                meta, blobs = read_archive(
                    path, "AmortizedHNSW", _VERSION, ("graph.bin", "query_transform.pt")
                )
                graph, transform = blobs["graph.bin"], blobs.get("query_transform.pt")
                config = self._check_meta(meta)
                calibration = meta.get("calibration")
                effort = (
                    None
                    if calibration is None
                    else EffortTable.from_state_dict(calibration, self.dim)
                )
                state = meta["xbox"]
                xbox = None if state is None else XboxTransform.from_state_dict(state)
                if xbox is not None and xbox.dim != self.dim:
                    raise ValueError(f"the Xbox state has dim {xbox.dim}, the index {self.dim}")
            else:  # hnswlib's own format: the graph alone
                with open(path, "rb") as f:
                    graph, transform, xbox, effort = f.read(), None, None, None
                config = {
                    "construction": "ip",
                    "sort_batches": self.sort_batches,
                    "candidates": self.candidates,
                    "allow_replace_deleted": False,
                    "ef": None,
                }
            allow = config["allow_replace_deleted"] or bool(allow_replace_deleted)
            index, deleted = _read_graph(graph, self.dim + (xbox is not None), max_elements, allow)
            del graph
            if config["ef"] is not None:
                index.set_ef(config["ef"])
        except (
            OSError,
            zipfile.BadZipFile,
            KeyError,
            TypeError,
            ValueError,
            RuntimeError,
        ) as e:
            raise HNSWError(
                f"{path} is not a readable AmortizedHNSW or hnswlib file ({type(e).__name__}: {e})"
            ) from None
        model = None
        if transform is not None:
            from .learn.models import load_model

            model = load_model(transform)
        with self._graph_lock.writing():
            self.index, self.xbox, self.construction = index, xbox, config["construction"]
            self.sort_batches, self.candidates = config["sort_batches"], config["candidates"]
            self._deleted, self._ready, self._walker = deleted, True, None
            self._allow_replace_deleted = allow
            self.query_transform = model
            self._effort = effort

    def _check_meta(self, meta: dict) -> dict:
        if meta["dim"] != self.dim:
            raise ValueError(f"an index of dim {meta['dim']}, this one has dim {self.dim}")
        if meta["construction"] not in CONSTRUCTIONS or (
            (meta["construction"] == "xbox") != (meta["xbox"] is not None)
        ):
            raise ValueError(
                f"construction {meta['construction']!r} with xbox {meta['xbox']!r:.80}"
            )
        flags = {name: meta.get(name, False) for name in ("sort_batches", "allow_replace_deleted")}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ValueError(f"sort_batches and allow_replace_deleted must be booleans: {flags}")
        return {
            **flags,
            "construction": meta["construction"],
            "candidates": as_positive_int(meta["candidates"], "candidates"),
            "ef": as_positive_int(meta["ef"], "ef"),
        }

    def __repr__(self) -> str:
        return (
            f"AmortizedHNSW(dim={self.dim}, construction={self.construction!r}, "
            f"count={self.index.element_count}, ef={self.index.ef})"
        )
