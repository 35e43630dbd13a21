"""Exact maximum inner product search on the C++ core.

Results follow faiss: scores float32 (higher is better) best first, ids int64, ties broken by the
lower id, and rows padded with score ``-inf`` and id ``-1`` where fewer than k keys exist.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._validation import as_int64, as_k, as_matrix, as_num_threads, as_positive_int

_PANEL = 64  # keys per panel of the kernels' layout (csrc/kernels.h)
_CACHE_LINE = 64  # bytes

__all__ = ["simd_level", "topk_dot", "segment_max_dot", "rescore", "topk_rows", "ExactIndex"]

logger = logging.getLogger(__name__)
logger.debug(
    "SIMD kernels: %s available (AMIPS_SIMD caps the level used)", _core.detected_simd_level()
)


def simd_level() -> str:
    """Instruction set the kernels use: ``"avx512"``, ``"avx2"``, ``"neon"`` or ``"scalar"``.

    The best one the CPU supports, capped by the environment variable ``AMIPS_SIMD`` (read on
    every call; a level of the other CPU family raises ValueError).
    """
    return _core.simd_level()


def _queries_and_keys(queries: ArrayLike, keys: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = as_matrix(keys, "keys", allow_empty=False)
    q = as_matrix(queries, "queries", dim=x.shape[1])
    return q, x


def topk_dot(
    queries: ArrayLike, keys: ArrayLike, k: int, *, num_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k keys by inner product.

    Parameters
    ----------
    queries : array (nq, d)
    keys : array (n, d), n >= 1
    k : int, 1 <= k <= n (ValueError beyond; :class:`ExactIndex` pads as faiss does)
    num_threads : int, optional (default: all cores this process may use)

    Returns
    -------
    scores : float32 (nq, k), descending
    ids : int64 (nq, k)

    Notes
    -----
    Keys are checked for NaN / Inf and packed into the kernels' layout on every call; to search
    the same keys repeatedly, add them once to an :class:`ExactIndex`, which does both once.
    """
    q, x = _queries_and_keys(queries, keys)
    return _core.topk_dot(q, x, as_k(k, len(x), len(q)), as_num_threads(num_threads))


def segment_max_dot(
    queries: ArrayLike, keys: ArrayLike, offsets: ArrayLike, *, num_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Best key of every segment for each query (per-cluster support values).

    Parameters
    ----------
    queries : array (nq, d)
    keys : array (n, d), grouped so that segment c is rows ``offsets[c]:offsets[c + 1]``
    offsets : int array (C + 1,), non-decreasing, from 0 to n

    Returns
    -------
    scores : float32 (nq, C), ``max_{x in segment c} q . x`` (``-inf`` for an empty segment)
    ids : int64 (nq, C), row of that key in ``keys`` (``-1`` for an empty segment); ties go to
        the lower id
    """
    q, x = _queries_and_keys(queries, keys)
    off = as_int64(offsets, "offsets", ndim=1)
    return _core.segment_max_dot(q, x, off, as_num_threads(num_threads))


def rescore(
    queries: ArrayLike,
    keys: ArrayLike,
    candidate_ids: ArrayLike,
    *,
    num_threads: int | None = None,
) -> np.ndarray:
    """Exact inner products of each query with its candidate keys.

    Parameters
    ----------
    queries : array (nq, d)
    keys : array (n, d)
    candidate_ids : int array (nq, m), values in [-1, n); -1 marks no candidate

    Returns
    -------
    scores : float32 (nq, m), ``queries[i] . keys[candidate_ids[i, j]]``, ``-inf`` for id -1
    """
    q, x = _queries_and_keys(queries, keys)
    ids = as_int64(candidate_ids, "candidate_ids", ndim=2)
    return _core.rescore(q, x, ids, as_num_threads(num_threads))


def topk_rows(
    scores: ArrayLike, k: int, *, num_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of every row of ``scores`` (n, C), e.g. the lists a router ranks first.

    Returns ``(top_scores, columns)``: float32 and int64 (n, k), best first, ties by the lower
    column; -inf entries (empty lists) are allowed and NaN ranks as -inf. k must not exceed C.
    """
    arr = np.asarray(scores)
    if arr.ndim != 2:
        raise ValueError(f"scores must be 2-D (n, C), got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    k = as_k(k, arr.shape[1], arr.shape[0], name="columns")
    return _core.topk_rows(arr, k, as_num_threads(num_threads))


def _aligned_empty(size: int) -> np.ndarray:
    """An uninitialised float32 buffer starting on a cache line: the kernels' vector loads of a
    panel then never straddle two lines (16-byte aligned panels searched up to 1.25x slower)."""
    raw = np.empty(size + _CACHE_LINE // 4, dtype=np.float32)
    skip = (-raw.ctypes.data % _CACHE_LINE) // 4
    return raw[skip : skip + size]


class ExactIndex:
    """Exact inner-product index with the interface of ``faiss.IndexFlatIP``.

    ``add(x)``, ``search(x, k) -> (D, I)``, ``ntotal``, ``d``, ``is_trained``, ``reset()``.
    Keys are validated once when added and stored once: whole panels of 64 keys already in the
    kernels' layout (in a buffer that grows geometrically), and the last ``ntotal % 64`` keys as
    rows; searches read both in place, so they skip the packing :func:`topk_dot` does on every
    call. Safe to search from several threads, also while another adds. Picklable.

    Difference from faiss: rows are padded with ``-inf`` (faiss uses ``-FLT_MAX``) and id ``-1``
    when k exceeds ``ntotal``, as long as the padded result stays under 1 GiB (beyond that,
    ValueError); searching an empty index gives a fully padded result, as in faiss.
    """

    is_trained = True

    def __init__(self, d: int):
        self.d = as_positive_int(d, "d")
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._panels = np.empty(0, dtype=np.float32)  # whole panels, then spare capacity
        self._n_packed = 0
        self._tail = np.empty((0, self.d), dtype=np.float32)  # fewer than 64 keys

    @property
    def ntotal(self) -> int:
        """Number of keys added."""
        return self._n_packed + len(self._tail)

    def _snapshot(self) -> tuple[np.ndarray, int, np.ndarray]:
        with self._lock:
            return self._panels, self._n_packed, self._tail

    @property
    def keys(self) -> np.ndarray:
        """The stored keys as rows, (ntotal, d) float32 (a copy)."""
        panels, n_packed, tail = self._snapshot()
        return np.concatenate([_core.unpack_keys(panels, n_packed, self.d), tail])

    def add(self, x: ArrayLike) -> None:
        """Append keys ``x`` (n, d); they get ids ntotal .. ntotal + n - 1."""
        x = as_matrix(x, "x", dim=self.d)
        with self._lock:
            tail = self._tail
            if len(tail) and len(tail) + len(x) >= _PANEL:  # the tail's panel fills up
                cut = _PANEL - len(tail)
                self._pack(np.concatenate([tail, x[:cut]]))
                tail, x = tail[:0], x[cut:]
            if len(tail):
                self._tail = np.concatenate([tail, x])
            else:
                whole = len(x) // _PANEL * _PANEL
                self._pack(x[:whole])
                self._tail = x[whole:].copy()
            # Searches hold the previous buffer and tail objects, which this never changes.

    def _pack(self, rows: np.ndarray) -> None:
        """Whole panels of ``rows`` after the packed keys (caller holds the lock)."""
        if len(rows) == 0:
            return
        need = (self._n_packed + len(rows)) * self.d
        if need > len(self._panels):
            grown = _aligned_empty(max(need, 2 * len(self._panels)))
            used = self._n_packed * self.d
            grown[:used] = self._panels[:used]
            self._panels = grown
        _core.pack_keys(self._panels, self._n_packed, np.ascontiguousarray(rows))
        self._n_packed += len(rows)

    def search(
        self, x: ArrayLike, k: int, *, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k keys for each query of ``x`` (nq, d): ``(D, I)`` float32 / int64, (nq, k)."""
        q = as_matrix(x, "x", dim=self.d)
        threads = as_num_threads(num_threads)
        panels, n_packed, tail = self._snapshot()
        n = n_packed + len(tail)
        k = as_k(k, n, len(q), pad=True)
        D = np.full((len(q), k), -np.inf, np.float32)
        I = np.full((len(q), k), -1, np.int64)
        if n:  # k beyond the keys: faiss's padding
            m = min(k, n)
            D[:, :m], I[:, :m] = _core.topk_dot_packed(q, panels, n_packed, tail, m, threads)
        return D, I

    def reset(self) -> None:
        """Remove every key."""
        with self._lock:
            self._clear()

    def __getstate__(self) -> dict:
        return {"d": self.d, "keys": self.keys}

    def __setstate__(self, state: dict) -> None:
        ExactIndex.__init__(self, state["d"])
        self.add(state["keys"])

    def __repr__(self) -> str:
        return f"ExactIndex(d={self.d}, ntotal={self.ntotal})"
