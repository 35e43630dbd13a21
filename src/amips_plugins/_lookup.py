"""Where values are, found in a sorted copy of them (for ids and labels kept by position)."""

from __future__ import annotations

import numpy as np

__all__ = ["look_up"]


def look_up(ordered: np.ndarray, positions: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The position of each of ``wanted`` among ``ordered`` (sorted values, ``positions``
    beside: where each value is kept), -1 where a value is absent."""
    if len(ordered) == 0:
        return np.full(wanted.shape, -1, np.int64)
    at = np.minimum(np.searchsorted(ordered, wanted), len(ordered) - 1)
    return np.where(ordered[at] == wanted, positions[at], -1)
