"""The walk's basis: at d in the hundreds, a walk that scores codes of the keys' leading
principal directions reads fewer bytes a key than one that scores every dimension, and the
exact ranking of what it finds keeps the returned scores exact.

Measured on WordNet + MiniLM (117k keys, d = 384, M 16, filled lists): with learned edges and
``target_recall`` 0.90 / 0.95 / 0.99, a basis of 192 directions (89% of the keys' second
moment) served 1.15x / 1.23x / 1.09x the queries/s of the full codes on two threads and one
query in 0.94x / 0.90x / 0.91x the time, at the same recall, built in 24.5 s against 38.3 s
(``fit_edges`` and ``calibrate``: 12.3 s against 16.1 s), the graph in 221 MB against 243 MB.
On the core alone, 256 directions gave about half the gain of 192. Below d = 256 nothing was
measured, and the codes are a few cache lines a key at most.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import as_positive_int

__all__ = ["principal_directions", "walk_dims_for"]

SMALLEST_PROJECTED_DIM = 256  # below it the codes are a few cache lines at most: kept whole


def walk_dims_for(dim: int, walk_dims: int | None) -> int:
    """The components of the walk's codes for keys of ``dim``: ``walk_dims`` (0: every
    dimension), or by default ``dim / 2`` (rounded up to 16) where ``dim >= 256``, else 0."""
    if walk_dims is None:
        return -(-dim // 32) * 16 if dim >= SMALLEST_PROJECTED_DIM else 0
    if isinstance(walk_dims, numbers.Integral) and walk_dims is not False and walk_dims == 0:
        return 0
    walk_dims = as_positive_int(walk_dims, "walk_dims")
    if walk_dims > dim:
        raise ValueError(f"walk_dims must be at most dim = {dim}, got {walk_dims}")
    return 0 if walk_dims == dim else walk_dims


def principal_directions(keys: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` unit directions (count, d) float32 of largest second moment of ``keys``
    (uncentred: inner products, not distances, are what the walk scores)."""
    moment = (keys.T @ keys).astype(np.float64)
    _, vectors = np.linalg.eigh(moment)  # ascending
    return np.ascontiguousarray(vectors[:, ::-1][:, :count].T, dtype=np.float32)
