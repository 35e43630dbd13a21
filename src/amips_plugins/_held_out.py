"""The queries a learned part was fitted on, and the check that calibration queries are others.

A part learned from queries finds their answers more often than those of queries it never saw
(``fit_edges`` links each training query's answers to each other): a calibration measured on
them overstates recall, and the targets it promises are missed. A part keeps a fingerprint of
every query it was fitted on (8 bytes a query), and ``calibrate`` refuses queries of which more
than ``MAX_SHARED`` are among them.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ._io import read_npy

__all__ = [
    "FITTED_QUERIES",
    "MAX_SHARED",
    "fingerprints",
    "joined",
    "read_fingerprints",
    "require_held_out",
    "shared",
]

# The archive member (.npy) of the fingerprints in an index's file.
FITTED_QUERIES = "fitted_queries.npy"

# Above this fraction of training queries among the calibration queries, calibrate refuses them;
# below it, the few a user's two query sets share by chance (a repeated query text).
MAX_SHARED = 0.01


def fingerprints(queries: np.ndarray) -> np.ndarray:
    """A 64-bit hash (n,) uint64 of each row's bytes of float32 ``queries`` (n, d): equal rows
    give equal hashes in every process; distinct rows, unequal ones but by chance (2^-64)."""
    rows = np.ascontiguousarray(queries, np.float32)
    digests = b"".join(hashlib.blake2b(row, digest_size=8).digest() for row in rows)
    return np.frombuffer(digests, np.uint64)


def joined(fitted: np.ndarray | None, new: np.ndarray) -> np.ndarray:
    """The fingerprints ``fitted`` (None: none) and ``new``, each once."""
    return np.unique(new if fitted is None else np.concatenate([fitted, new]))


def shared(queries: np.ndarray, fitted: np.ndarray | None) -> float:
    """The fraction of ``queries`` (n, d) whose fingerprint is in ``fitted`` (None: 0)."""
    if fitted is None or len(queries) == 0:
        return 0.0
    return float(np.isin(fingerprints(queries), fitted).mean())


def require_held_out(
    queries: np.ndarray, fitted: np.ndarray | None, part: str, error: type = ValueError
) -> None:
    """``error`` (a ValueError) when more than ``MAX_SHARED`` of ``queries`` (n, d) have a
    fingerprint in ``fitted`` (those of the queries ``part`` was fitted on; None: nothing)."""
    fraction = shared(queries, fitted)
    if fraction > MAX_SHARED:
        raise error(
            f"{fraction:.0%} of the calibration queries are queries {part} was fitted on: "
            "calibrate on held-out queries, or the recall it promises would be missed"
        )


def read_fingerprints(data: bytes) -> np.ndarray:
    """Fingerprints from an archive member's ``.npy`` bytes; ValueError for anything else."""
    fitted = read_npy(data)
    if fitted.dtype != np.uint64 or fitted.ndim != 1:
        raise ValueError(f"fingerprints must be uint64 (n,), got {fitted.dtype} {fitted.shape}")
    return fitted
