"""Re-ranking of a compressed index's candidates from the raw keys it keeps: faiss's
``IndexRefineFlat`` (``index_factory``'s ``",RFlat"``) and ``IndexRefine`` over float16 keys
(``",Refine(SQfp16)"``), with the learned choice of lists.

A scan of compressed codes (PQ fast-scan, SQ8, RaBitQ) ranks keys by approximate scores; the best
``k * k_factor`` of them are scored again, q . x from the raw keys (exactly, or as the float16
values of the keys, half the memory), and the best k of those returned. The raw keys are kept in
id order, so ids must be the ones ``add`` gives (0 .. ntotal - 1), as faiss's ``IndexRefine``
requires; keys cannot be removed (faiss's cannot either). ``target_recall`` chooses the
re-ranking depth together with each query's nprobe (see ``.calibration``).
"""

from __future__ import annotations

import faiss
import numpy as np

from .. import _core
from .._validation import as_matrix, as_num_threads
from .state import IVFState

__all__ = ["RawKeys", "Refine", "refined_parts"]

_FLOAT16_MAX = float(np.finfo(np.float16).max)


class RawKeys:
    """Growable rows (n, d), row i the key with id i: float32, or float16."""

    def __init__(self, d: int, rows: np.ndarray | None = None):
        self._buffer = np.empty((16, d), np.float32) if rows is None else rows.copy()
        self._count = 0 if rows is None else len(rows)

    @property
    def dtype(self) -> np.dtype:
        return self._buffer.dtype

    @property
    def rows(self) -> np.ndarray:
        return self._buffer[: self._count]

    def append(self, x: np.ndarray) -> None:
        end = self._count + len(x)
        if end > len(self._buffer):  # doubling: an add costs its own rows, amortized
            grown = np.empty((max(end, 2 * len(self._buffer)), self._buffer.shape[1]), self.dtype)
            grown[: self._count] = self.rows
            self._buffer = grown
        self._buffer[self._count : end] = x
        self._count = end

    def clear(self) -> None:
        self._buffer, self._count = np.empty((16, self._buffer.shape[1]), self.dtype), 0


def refined_parts(index):
    """``(base IVF index, raw keys (n, d) or None, k_factor)`` of a faiss index: an
    ``IndexRefine`` gives its base index, a copy of its refine index's keys (an ``IndexFlat``'s
    float32, a float16 ``IndexScalarQuantizer``'s float16) and its k_factor; any other index is
    its own base, without raw keys."""
    if not isinstance(index, faiss.IndexRefine):
        return index, None, 1.0
    refine = faiss.downcast_index(index.refine_index)
    base = faiss.downcast_index(index.base_index)
    if isinstance(refine, faiss.IndexFlat) and refine.ntotal == base.ntotal:
        size = refine.ntotal * refine.d
        keys = np.array(faiss.rev_swig_ptr(refine.get_xb(), size), np.float32)
    elif _is_float16(refine) and refine.ntotal == base.ntotal:
        keys = faiss.vector_to_array(refine.codes).view(np.float16)
    else:
        raise TypeError(
            "from_faiss takes an IndexRefine whose refine_index is an IndexFlat or a float16 "
            "IndexScalarQuantizer (SQfp16) holding every key of its base index, got "
            f"{type(refine).__name__} with {refine.ntotal} keys for {base.ntotal}"
        )
    return base, keys.reshape(refine.ntotal, refine.d), float(index.k_factor)


def _is_float16(index) -> bool:
    return (
        isinstance(index, faiss.IndexScalarQuantizer)
        and index.sq.qtype == faiss.ScalarQuantizer.QT_fp16
    )


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
                "k_factor needs an index that re-ranks (a factory string ending ',RFlat' or "
                "',Refine(SQfp16)')"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise TypeError(f"k_factor must be a number, got {value!r:.40}")
        if not value >= 1:  # also NaN
            raise ValueError(f"k_factor must be at least 1, got {value}")
        self._k_factor = float(value)

    @property
    def raw_key_dtype(self) -> np.dtype | None:
        """The type the raw keys are kept in for re-ranking: float32 (``",RFlat"``), float16
        (``",Refine(SQfp16)"``: half the memory, scores those of the float16 values), or None
        for an index that does not re-rank."""
        return None if self._raw_keys is None else self._raw_keys.dtype

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

    def _check_add(self, x: np.ndarray, ids: np.ndarray | None) -> None:
        """Before an add of keys ``x``: a re-ranking index takes no ids of the caller's, and
        float16 raw keys no value beyond float16's range."""
        if not self.refines:
            return
        if ids is not None:
            raise ValueError(
                "an index that re-ranks from its raw keys takes keys by add (ids 0 .. ntotal - 1), "
                "as faiss's IndexRefine does; add_with_ids is not supported"
            )
        self._raw_rows()  # no key added or removed behind this class
        if self._raw_keys.dtype == np.float16 and len(x) and np.abs(x).max() > _FLOAT16_MAX:
            raise ValueError(
                f"this index keeps its raw keys as float16 (Refine(SQfp16)), whose largest value "
                f"is {_FLOAT16_MAX:g}: keys up to {np.abs(x).max():.4g} cannot be kept"
            )

    def _refuse_removal(self, what: str) -> None:
        if self.refines:
            raise ValueError(
                f"{what} is not supported by an index that re-ranks from its raw keys (ids are "
                "rows of the raw keys), as by faiss's IndexRefine; build the index again"
            )

    def raw_keys(self) -> np.ndarray:
        """A copy of the raw keys (ntotal, d) as float32, row i the key with id i (re-ranking
        indexes; float16 ones as the values they keep)."""
        if not self.refines:
            raise ValueError(
                "this index keeps no raw keys (a factory string ending ',RFlat' or "
                "',Refine(SQfp16)' does)"
            )
        with self._lock.reading():
            return self._raw_rows().astype(np.float32)


def as_raw_keys(data: np.ndarray, index) -> np.ndarray:
    """A file's raw keys (float32 or float16), checked against its index."""
    if isinstance(data, np.ndarray) and data.dtype == np.float16:
        if data.ndim != 2 or data.shape[1] != index._d:
            raise ValueError(f"raw keys must be (n, {index._d}), got shape {data.shape}")
        if not np.isfinite(data).all():
            raise ValueError("raw keys contain NaN or Inf")
        keys = np.ascontiguousarray(data)
    else:
        keys = as_matrix(data, "raw keys", dim=index._d)
    if len(keys) != index.ntotal:
        raise ValueError(f"{len(keys)} raw keys for an index of {index.ntotal}")
    return keys
