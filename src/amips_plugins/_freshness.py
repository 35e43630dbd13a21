"""Learned parts and the keys they describe.

Every learned part of an index (a router's pieces, a calibration, a query transform) is fitted
on the keys present at the time. Each change of keys either keeps it true (a maintained router
takes new keys as pieces) or leaves it stale; a stale part is refreshed or refused, never trusted
silently: a search through a stale router or query transform warns (``StaleWarning``) and names
it in ``last_search_stats["stale"]``; a ``target_recall`` search after a change of keys measures
the calibration again on the calibration queries the index kept, or, with
``auto_recalibrate = False``, raises ``StaleCalibrationError``.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "KEPT_CALIBRATION_QUERIES",
    "StaleCalibrationError",
    "StaleWarning",
    "check_measurable",
    "kept_calibration_queries",
    "warn_stale",
]

# Calibration queries an index keeps for measuring again after the keys change: enough for the
# mean recall@10 within about half a point, few enough that measuring again takes a fraction of
# a second to a few seconds (the exact top-k among all keys dominates).
KEPT_CALIBRATION_QUERIES = 2_000


class StaleCalibrationError(ValueError):
    """The keys changed since ``calibrate`` and the index may not measure again by itself."""


class StaleWarning(UserWarning):
    """A learned part was fitted on other keys than those searched."""


def kept_calibration_queries(queries: np.ndarray, seed: int = 0) -> np.ndarray:
    """At most ``KEPT_CALIBRATION_QUERIES`` of ``queries`` (n, d), a seeded sample."""
    if len(queries) <= KEPT_CALIBRATION_QUERIES:
        return queries.copy()
    rows = np.random.default_rng(seed).choice(len(queries), KEPT_CALIBRATION_QUERIES, False)
    return queries[np.sort(rows)]


def warn_stale(parts: set[str]) -> None:
    """Warn that a search uses learned parts fitted on other keys."""
    if parts:
        warnings.warn(
            f"the keys changed since {', '.join(sorted(parts))} was fitted and it could not "
            "follow them: fit it again (results may miss the new keys)",
            StaleWarning,
            stacklevel=4,
        )


def check_measurable(auto_recalibrate: bool, kept, obstacle: str | None = None) -> None:
    """Raise ``StaleCalibrationError`` unless a calibration the keys left behind may be measured
    again (``auto_recalibrate``), on the ``kept`` calibration queries, with no ``obstacle``."""
    why = obstacle
    if not auto_recalibrate:
        why = "auto_recalibrate is off"
    elif kept is None:
        why = "the index kept no calibration queries (a file from an earlier version)"
    if why is not None:
        raise StaleCalibrationError(
            f"the keys (or a graph's links) changed since calibrate() and the calibration cannot "
            f"be measured again "
            f"({why}): call calibrate(held_out_queries, k) again"
        )
