"""Exact re-ranking of a compressed index's candidates from the raw keys it keeps: faiss's
``IndexRefineFlat`` (``index_factory``'s ``",RFlat"``), with the learned choice of lists.

A scan of compressed codes (PQ fast-scan, SQ8, RaBitQ) ranks keys by approximate scores; the best
``k * k_factor`` of them are scored again exactly, q . x from the raw keys, and the best k of
those returned. The raw keys are kept in id order, so ids must be the ones ``add`` gives
(0 .. ntotal - 1), as faiss's ``IndexRefine`` requires; keys cannot be removed (faiss's cannot
either). ``target_recall`` chooses the re-ranking depth together with each query's nprobe (see
``.calibration``).
"""

from __future__ import annotations

import faiss
import numpy as np

from .. import _core
from .._validation import as_matrix, as_num_threads
from .state import IVFState

__all__ = ["RawKeys", "Refine", "refined_parts"]


class RawKeys:
    """Growable float32 rows (n, d), row i the key with id i."""

    def __init__(self, d: int, rows: np.ndarray | None = None):
        self._buffer = np.empty((16, d), np.float32) if rows is None else rows.copy()
        self._count = 0 if rows is None else len(rows)

    @property
    def rows(self) -> np.ndarray:
        return self._buffer[: self._count]

    def append(self, x: np.ndarray) -> None:
        end = self._count + len(x)
        if end > len(self._buffer):  # doubling: an add costs its own rows, amortized
            grown = np.empty((max(end, 2 * len(self._buffer)), self._buffer.shape[1]), np.float32)
            grown[: self._count] = self.rows
            self._buffer = grown
        self._buffer[self._count : end] = x
        self._count = end

    def clear(self) -> None:
        self._buffer, self._count = np.empty((16, self._buffer.shape[1]), np.float32), 0


def refined_parts(index):
    """``(base IVF index, raw keys (n, d) or None, k_factor)`` of a faiss index: an
    ``IndexRefineFlat`` gives its base index, a copy of its flat keys and its k_factor;
    any other index is its own base, without raw keys."""
    if not isinstance(index, faiss.IndexRefine):
        return index, None, 1.0
    flat = faiss.downcast_index(index.refine_index)
    base = faiss.downcast_index(index.base_index)
    if not isinstance(flat, faiss.IndexFlat) or flat.ntotal != base.ntotal:
        raise TypeError(
            "from_faiss takes an IndexRefine whose refine_index is an IndexFlat holding every "
            f"key of its base index, got {type(flat).__name__} with {flat.ntotal} keys for "
            f"{base.ntotal}"
        )
    keys = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
    return base, np.array(keys, np.float32), float(index.k_factor)


class Refine(IVFState):
    """The raw keys of ``AmortizedIVFBase`` (when it re-ranks) and the re-ranking itself."""

    @property
    def refines(self) -> bool:
        """Whether search re-ranks the scan's candidates from the raw keys."""
        return self._raw_keys is not None

    @property
    def k_factor(self) -> float:
        """Candidates re-ranked per result (faiss's ``IndexRefine.k_factor``): a search for k
        re-ranks the scan's best ``int(k * k_factor)``. ``target_recall`` chooses its own."""
        return self._k_factor

    @k_factor.setter
    def k_factor(self, value: float) -> None:
        if not self.refines:
            raise ValueError(
                "k_factor needs an index that re-ranks (a factory string ending ',RFlat')"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise TypeError(f"k_factor must be a number, got {value!r:.40}")
        if not value >= 1:  # also NaN
            raise ValueError(f"k_factor must be at least 1, got {value}")
        self._k_factor = float(value)

    def _keep_raw_keys(self, keys: np.ndarray | None, k_factor: float) -> None:
        if keys is None:
            return
        if keys.shape != (self.ntotal, self._d):
            raise ValueError(f"raw keys {keys.shape} for an index of {self.ntotal} x {self._d}")
        self._raw_keys, self._k_factor = RawKeys(self._d, keys), 1.0
        self.k_factor = k_factor

    def _raw_rows(self) -> np.ndarray:
        """The raw keys (ntotal, d), checked against the index (under the lock)."""
        rows = self._raw_keys.rows
        if len(rows) != self.ntotal:
            raise ValueError(
                f"the index holds {self.ntotal} keys and {len(rows)} raw keys: keys were added "
                "or removed from C++ (faiss's functions), which keeps no raw key to re-rank from"
            )
        return rows

    def _depth(self, k: int, k_factor: float | None = None) -> int:
        """Candidates a search for k scans for: k, or ``int(k * k_factor)`` when re-ranking."""
        if not self.refines:
            return k
        return max(k, int(k * (self._k_factor if k_factor is None else k_factor)))

    def _reranked(self, q: np.ndarray, k: int, candidates: np.ndarray):
        """The best k of the ``candidates`` (n, m) ids by exact inner product with ``q``: (D, I)
        (n, k), padded as faiss pads where fewer than k are candidates."""
        threads = as_num_threads(None)
        scores = _core.rescore(q, self._raw_rows(), candidates, threads)
        return _core.topk_rows(scores, k, threads, labels=candidates)

    def _check_add(self, ids: np.ndarray | None) -> None:
        """Before an add: a re-ranking index takes no ids of the caller's."""
        if not self.refines:
            return
        if ids is not None:
            raise ValueError(
                "an index that re-ranks from its raw keys takes keys by add (ids 0 .. ntotal - 1), "
                "as faiss's IndexRefine does; add_with_ids is not supported"
            )
        self._raw_rows()  # no key added or removed behind this class

    def _refuse_removal(self, what: str) -> None:
        if self.refines:
            raise ValueError(
                f"{what} is not supported by an index that re-ranks from its raw keys (ids are "
                "rows of the raw keys), as by faiss's IndexRefine; build the index again"
            )

    def raw_keys(self) -> np.ndarray:
        """A copy of the raw keys (ntotal, d), row i the key with id i (re-ranking indexes)."""
        if not self.refines:
            raise ValueError("this index keeps no raw keys (a factory string ending ',RFlat' does)")
        with self._lock.reading():
            return self._raw_rows().copy()


def as_raw_keys(data: np.ndarray, index) -> np.ndarray:
    """A file's raw keys, checked against its index."""
    keys = as_matrix(data, "raw keys", dim=index._d)
    if len(keys) != index.ntotal:
        raise ValueError(f"{len(keys)} raw keys for an index of {index.ntotal}")
    return keys
