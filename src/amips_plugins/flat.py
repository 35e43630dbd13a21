"""ExactIndex: ``faiss.IndexFlatIP`` searched by the C++ core's packed kernels."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._packed import PANEL, aligned_empty
from ._sync import ReadWriteLock
from ._validation import as_k, as_matrix, as_num_threads, as_positive_int, into_out

__all__ = ["ExactIndex"]

_FlatIP = faiss.IndexFlatIP


class ExactIndex(faiss.IndexFlatIP):
    """Exact inner-product index: a subclass of ``faiss.IndexFlatIP`` whose ``search`` runs
    on the C++ core.

    Everything else is faiss's own (``ntotal``, ``d``, ``reconstruct``, ``reconstruct_n``,
    ``range_search``, ``assign``, ...), and faiss's functions and containers take the object as
    the IndexFlatIP it is: ``faiss.write_index`` (read back with ``faiss.read_index`` and
    ``from_faiss``), ``clone_index``, ``IndexIDMap``, ``IndexShards``. Those run faiss's
    C++ search, which is exact too.

    Besides faiss's rows, the keys are kept in the kernels' layout: whole panels of 64 keys (in
    a buffer that grows geometrically) and the last ``ntotal % 64`` keys as rows, so a search
    skips the packing ``topk_dot`` does on every call. This costs a second copy of the
    keys: twice the memory of ``faiss.IndexFlatIP``. Keys that C++ adds or removes (e.g.
    through ``IndexIDMap``) are repacked at the next search here: a search compares the count
    and a sample of rows (64 spread over the index, the last 64) with what was packed, so a
    removal followed by as many adds is found too. Only a change that leaves every sampled
    row as it was (possible with repeated keys) would go unnoticed.

    Safe to search from several threads, also while another adds, removes or resets (a search
    sees the keys before or after the change). Picklable.

    Differences from faiss: bad input raises ValueError / TypeError (also AssertionError for a
    wrong dimension); rows are padded with ``-inf`` (faiss: ``-FLT_MAX``) and id ``-1`` when
    k exceeds ``ntotal``, as long as the padded result stays under 1 GiB.
    """

    # faiss refuses attributes its classes do not have; these are this class's own.
    _lock: Any = None
    _panels: Any = None  # whole panels, then spare capacity
    _n_packed = 0
    _tail: Any = None  # the last ntotal % 64 keys as rows
    _marks: Any = None  # faiss's rows at _mark_positions when they were packed
    _mark_positions: Any = None

    def __init__(self, d: int):
        super().__init__(as_positive_int(d, "d"))
        self._lock = ReadWriteLock()
        self._clear_packed()

    @classmethod
    def from_faiss(cls, index) -> ExactIndex:
        """A copy of a ``faiss.IndexFlatIP`` (e.g. one ``faiss.read_index`` returns)."""
        is_flat = isinstance(index, faiss.IndexFlat)
        if not is_flat or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise TypeError(f"from_faiss needs a faiss.IndexFlatIP, got {index!r:.100}")
        self = cls(index.d)
        self.add(_rows_of(index))
        return self

    def _clear_packed(self) -> None:
        self._panels = np.empty(0, dtype=np.float32)
        self._n_packed = 0
        self._tail = np.empty((0, self.d), dtype=np.float32)
        self._mark()

    def _mark(self) -> None:
        """Note faiss's rows at 64 positions spread over the index and its last 64, as bits:
        4 components of each, spread over the row (whole rows, read at every search, took 40%
        of a one-query search over 343 keys of d = 384)."""
        n, d = self.ntotal, self.d
        spread = np.linspace(0, n - 1, min(n, 64), dtype=np.int64)
        rows = np.union1d(spread, np.arange(max(n - 64, 0), n))
        columns = np.linspace(0, d - 1, min(d, 4), dtype=np.int64)
        self._mark_positions = (rows[:, None] * d + columns[None, :]).ravel()
        self._marks = self._noted()

    def _noted(self) -> np.ndarray:
        return _rows_of(self).reshape(-1)[self._mark_positions].view(np.uint32)

    def _in_step(self) -> bool:
        """Whether the packed keys are still faiss's rows (C++ may have changed them)."""
        if self._n_packed + len(self._tail) != self.ntotal:
            return False
        return np.array_equal(self._noted(), self._marks)

    @property
    def keys(self) -> np.ndarray:
        """The stored keys as rows, (ntotal, d) float32 (a copy)."""
        with self._lock.reading():
            return _rows_of(self).copy()

    def add(self, x: ArrayLike) -> None:
        """Append keys ``x`` (n, d); they get ids ntotal .. ntotal + n - 1."""
        x = as_matrix(x, "x", dim=self.d)
        with self._lock.writing():
            in_step = self._in_step()
            self.add_c(len(x), faiss.swig_ptr(x))
            if in_step:
                self._append_packed(x)
                self._mark()
            else:  # C++ changed the keys behind this object's back
                self._repack()

    def _append_packed(self, x: np.ndarray) -> None:
        tail = self._tail
        if len(tail) and len(tail) + len(x) >= PANEL:  # the tail's panel fills up
            cut = PANEL - len(tail)
            self._pack(np.concatenate([tail, x[:cut]]))
            tail, x = tail[:0], x[cut:]
        if len(tail):
            self._tail = np.concatenate([tail, x])
        else:
            whole = len(x) // PANEL * PANEL
            self._pack(x[:whole])
            self._tail = x[whole:].copy()
        # Searches hold the previous buffer and tail objects, which this never changes.

    def _pack(self, rows: np.ndarray) -> None:
        """Whole panels of ``rows`` after the packed keys."""
        if len(rows) == 0:
            return
        need = (self._n_packed + len(rows)) * self.d
        if need > len(self._panels):
            grown = aligned_empty(max(need, 2 * len(self._panels)))
            used = self._n_packed * self.d
            grown[:used] = self._panels[:used]
            self._panels = grown
        _core.pack_keys(self._panels, self._n_packed, np.ascontiguousarray(rows))
        self._n_packed += len(rows)

    def _repack(self) -> None:
        """Pack faiss's rows anew (after a reset or a removal)."""
        self._clear_packed()
        self._append_packed(_rows_of(self))
        self._mark()

    def _packed(self) -> tuple[np.ndarray, int, np.ndarray]:
        """The packed keys as one search reads them, repacked first if C++ changed the rows."""
        with self._lock.reading():
            if self._in_step():
                return self._panels, self._n_packed, self._tail
        with self._lock.writing():
            if not self._in_step():
                self._repack()
            return self._panels, self._n_packed, self._tail

    def search(
        self,
        x: ArrayLike,
        k: int,
        *,
        params=None,
        D: np.ndarray | None = None,
        I: np.ndarray | None = None,
        num_threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k keys for each query of ``x`` (nq, d): ``(D, I)`` float32 / int64 (nq, k), best
        first, ties by the lower id; written into ``D`` / ``I`` when given, as in faiss.

        ``params`` (a ``faiss.SearchParameters``) with an id selector ``sel`` runs faiss's own
        search over the selected keys.
        """
        q = as_matrix(x, "x", dim=self.d)
        threads = as_num_threads(num_threads)
        if params is not None and not isinstance(params, faiss.SearchParameters):
            raise TypeError(f"params must be a faiss.SearchParameters, got {params!r:.100}")
        if params is not None and params.sel is not None:
            with self._lock.reading():
                k = as_k(k, self.ntotal, len(q), pad=True)
                scores, ids = _FlatIP.search(self, q, k, params=params)
            scores[ids == -1] = -np.inf  # faiss pads with -FLT_MAX
        else:
            panels, n_packed, tail = self._packed()
            n = n_packed + len(tail)
            k = as_k(k, n, len(q), pad=True)
            m = min(k, n)
            if m:
                scores, ids = _core.topk_dot_packed(q, panels, n_packed, tail, m, threads)
            else:
                scores, ids = np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
            if m < k:  # k beyond the keys: faiss's padding
                scores = np.pad(scores, ((0, 0), (0, k - m)), constant_values=-np.inf)
                ids = np.pad(ids, ((0, 0), (0, k - m)), constant_values=-1)
        return into_out(D, scores, "D"), into_out(I, ids, "I")

    def reset(self) -> None:
        """Remove every key."""
        with self._lock.writing():
            _FlatIP.reset(self)
            self._clear_packed()

    def remove_ids(self, sel) -> int:
        """faiss's ``remove_ids`` (an IDSelector or an array of ids): later keys move down to
        keep ids contiguous. Returns the number removed."""
        with self._lock.writing():
            removed = _FlatIP.remove_ids(self, sel)
            if removed:
                self._repack()
            return removed

    def __getstate__(self) -> dict:
        return {"d": self.d, "keys": self.keys}

    def __setstate__(self, state: dict) -> None:
        ExactIndex.__init__(self, state["d"])
        self.add(state["keys"])

    def __repr__(self) -> str:
        return f"ExactIndex(d={self.d}, ntotal={self.ntotal})"


def _rows_of(index) -> np.ndarray:
    """A view of a flat index's rows (valid until its keys change)."""
    n, d = index.ntotal, index.d
    if n == 0:
        return np.empty((0, d), np.float32)
    return faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)
