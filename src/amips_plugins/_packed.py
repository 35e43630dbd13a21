"""Keys in the kernels' layout (csrc/kernels.h): whole panels of 64 keys, packed once so that
searches skip the packing the row-major entry points do on every call."""

from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["PANEL", "aligned_empty", "pack_rows"]

PANEL = 64  # keys per panel
_CACHE_LINE = 64  # bytes


def aligned_empty(size: int) -> np.ndarray:
    """An uninitialised float32 buffer starting on a cache line: the kernels' vector loads of a
    panel then never straddle two lines (16-byte aligned panels searched up to 1.25x slower)."""
    raw = np.empty(size + _CACHE_LINE // 4, dtype=np.float32)
    skip = (-raw.ctypes.data % _CACHE_LINE) // 4
    return raw[skip : skip + size]


def pack_rows(rows: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """``rows`` (n, d), validated float32, as the packed entry points take them: (panels holding
    the first n_packed rows, n_packed (a multiple of 64), the remaining rows)."""
    whole = len(rows) // PANEL * PANEL
    panels = aligned_empty(whole * rows.shape[1])
    if whole:
        _core.pack_keys(panels, 0, np.ascontiguousarray(rows[:whole]))
    return panels, whole, np.ascontiguousarray(rows[whole:])
