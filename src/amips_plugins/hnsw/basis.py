"""The walk's basis: at d in the hundreds, a walk that scores codes of the keys' leading
principal directions reads fewer bytes a key than one that scores every dimension, and the
exact ranking of what it finds keeps the returned scores exact.

Measured on WordNet + MiniLM (117k keys, d = 384, M 16, filled lists): with learned edges and
``target_recall`` 0.90 / 0.95 / 0.99, a basis of 192 directions (89% of the keys' second
moment) served 1.15x / 1.23x / 1.09x the queries/s of the full codes on two threads and one
query in 0.94x / 0.90x / 0.91x the time, at the same recall, built in 24.5 s against 38.3 s
(``fit_edges`` and ``calibrate``: 12.3 s against 16.1 s), the graph in 221 MB against 243 MB.
On the core alone, 256 directions gave about half the gain of 192. Below d = 256 the codes are
a few cache lines a key at most: on GloVe (d = 50, one line either way), 32 directions (84% of
the second moment) found recall@10 0.733 at ef 28, where every dimension found 0.899.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import as_positive_int

__all__ = ["KEYS_PER_DIM", "walk_basis", "walk_dims_for"]

SMALLEST_PROJECTED_DIM = 256  # below it the codes are a few cache lines at most: kept whole
KEYS_PER_DIM = 4  # a basis is fitted once the graph holds this many keys per dimension


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


def walk_basis(keys: np.ndarray, walk_dims: int) -> np.ndarray | None:
    """The walk's basis (walk_dims, d) float32 for a graph of ``keys`` (n, d): their
    ``walk_dims`` unit directions of largest second moment (uncentred: inner products, not
    distances, are what the walk scores). None where ``walk_dims`` is 0, or where there are
    fewer than ``KEYS_PER_DIM`` keys per dimension to fit it on (a graph grown a few keys at a
    time gets one when it has them)."""
    n, d = keys.shape
    if walk_dims == 0 or n < KEYS_PER_DIM * d:
        return None
    moment = np.zeros((d, d))
    for start in range(0, n, 65536):  # in float64, a block at a time
        block = keys[start : start + 65536].astype(np.float64)
        moment += block.T @ block
    _, vectors = np.linalg.eigh(moment)  # ascending
    return np.ascontiguousarray(vectors[:, ::-1][:, :walk_dims].T, dtype=np.float32)
