"""Exact maximum inner product search on the C++ core.

Results follow faiss: scores float32 (higher is better) best first, ids int64, ties broken by the
lower id, and rows padded with score ``-inf`` and id ``-1`` where fewer than k keys exist.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._validation import as_int64, as_k, as_matrix, as_num_threads

__all__ = ["simd_level", "topk_dot", "segment_max_dot", "rescore", "topk_rows"]

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
    k : int, 1 <= k <= n (ValueError beyond; ``ExactIndex`` pads as faiss does)
    num_threads : int, optional (default: all cores this process may use)

    Returns
    -------
    scores : float32 (nq, k), descending
    ids : int64 (nq, k)

    Notes
    -----
    Keys are checked for NaN / Inf and packed into the kernels' layout on every call; to search
    the same keys repeatedly, add them once to an ``ExactIndex``, which does both once.
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
