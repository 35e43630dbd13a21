"""The MIPS -> nearest-neighbour (Xbox) transform with an incremental max norm.

Bachrach et al. 2014: append ``sqrt(M^2 - |x|^2)`` to every key (M the largest key norm) and 0 to
every query; then ``|q~ - x~|^2 = |q|^2 + M^2 - 2 q.x``, so the L2 nearest neighbour of a query is
its maximum inner product key, and every key is its own nearest neighbour. As in Vespa's
``dotproduct`` metric, M is the largest norm seen so far, so an index can start empty and grow;
keys added before M grew keep the extra coordinate computed with the M of their batch.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._validation import as_matrix, as_positive_int

__all__ = ["XboxTransform"]

_FORMAT = "amips_plugins.XboxTransform"
_VERSION = 1


class XboxTransform:
    """Incremental Xbox transform for ``dim``-dimensional vectors.

    Parameters
    ----------
    dim : int
        Dimension d of keys and queries; transformed vectors have d + 1.
    """

    def __init__(self, dim: int):
        self._impl = _core.XboxTransform(as_positive_int(dim, "dim"))

    @property
    def dim(self) -> int:
        return self._impl.dim

    @property
    def max_norm(self) -> float:
        """Largest key norm seen so far (0.0 before any key)."""
        return self._impl.max_norm

    @property
    def count(self) -> int:
        """Number of keys seen so far."""
        return self._impl.count

    def add_keys(self, keys: ArrayLike) -> np.ndarray:
        """Raise the max norm to cover ``keys`` (n, d); return them augmented, (n, d + 1) float32.

        The extra coordinate uses the max norm *after* this batch, so every returned key has norm
        ``max_norm`` (up to float32 rounding).
        """
        return self._impl.add_keys(as_matrix(keys, "keys", dim=self.dim))

    def transform_queries(self, queries: ArrayLike) -> np.ndarray:
        """Return ``[q, 0]`` for every query of ``queries`` (n, d): (n, d + 1) float32."""
        return self._impl.transform_queries(as_matrix(queries, "queries", dim=self.dim))

    def state_dict(self) -> dict:
        """Everything needed to restore this transform, as plain Python values."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "dim": self.dim,
            "max_norm": self.max_norm,
            "count": self.count,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from ``state_dict`` (ValueError for a foreign or mismatched one)."""
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"not an XboxTransform state: {state!r:.200}")
        if state.get("version") != _VERSION:
            raise ValueError(
                f"XboxTransform state version {state.get('version')!r}, expected {_VERSION}"
            )
        if state.get("dim") != self.dim:
            raise ValueError(
                f"XboxTransform state has dim {state.get('dim')!r}, this one has {self.dim}"
            )
        try:
            max_norm, count = float(state["max_norm"]), int(state["count"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"XboxTransform state without a valid max_norm and count: {e}"
            ) from None
        self._impl.set_state(max_norm, count)

    @classmethod
    def from_state_dict(cls, state: dict) -> XboxTransform:
        if not isinstance(state, dict) or "dim" not in state:
            raise ValueError(f"not an XboxTransform state: {state!r:.200}")
        transform = cls(state["dim"])
        transform.load_state_dict(state)
        return transform

    def __getstate__(self) -> dict:
        return self.state_dict()

    def __setstate__(self, state: dict) -> None:
        self._impl = _core.XboxTransform(as_positive_int(state.get("dim"), "dim"))
        self.load_state_dict(state)

    def __repr__(self) -> str:
        return f"XboxTransform(dim={self.dim}, max_norm={self.max_norm:.6g}, count={self.count})"
