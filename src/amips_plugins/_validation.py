"""Conversion and checks at the Python boundary: numpy or torch in, C-contiguous float32 out.

Every public entry point passes its arguments through here once; errors name the argument and
its actual shape or value.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _core

__all__ = [
    "DimensionError",
    "as_matrix",
    "as_positive_int",
    "as_num_threads",
    "as_k",
    "as_int64",
    "as_offsets",
    "into_out",
]


class DimensionError(ValueError, AssertionError):
    """An array of the wrong dimension: a ValueError, and the AssertionError faiss's Python
    layer raises in that case, so that code written for faiss catches it as before."""


def _to_numpy(x, name: str) -> np.ndarray:
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
        if x.device.type == "meta":  # shapes only: copying it out raises NotImplementedError
            raise TypeError(
                f"{name} is a tensor on device 'meta', which has no data (shape {tuple(x.shape)})"
            )
        x = x.detach().cpu()
        x = (x.float() if x.is_floating_point() else x).numpy()  # numpy has no bfloat16
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}: {e}") from None
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def as_matrix(x, name: str, *, dim: int | None = None, allow_empty: bool = True) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 array of shape (n, d), copying only if needed.

    Raises TypeError for non-numeric input and ValueError for a wrong number of dimensions, a
    dimension other than ``dim`` (``DimensionError``), no rows when ``allow_empty`` is
    false, or NaN / Inf values (float64 values beyond float32 range count as Inf).
    """
    # the common case, checked in a third of the time: a one-query search is short
    ready = type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous
    arr = x if ready else _to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionError(f"{name} must have dimension {dim}, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column, got shape {arr.shape}")
    if not allow_empty and arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if not ready:
        with np.errstate(over="ignore"):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not _core.all_finite(arr):
        raise ValueError(f"{name} contains NaN or Inf (shape {arr.shape})")
    return arr


def as_positive_int(value, name: str) -> int:
    """``value`` as a positive Python int (TypeError for non-integers, ValueError for <= 0)."""
    if type(value) is not int and (
        isinstance(value, bool) or not isinstance(value, numbers.Integral)
    ):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def as_target_recall(value) -> float:
    """A declared mean recall: a float in (0, 1] (ValueError otherwise, NaN included); a string
    or a bool is a TypeError, as faiss and hnswlib refuse strings for numbers."""
    if isinstance(value, (str, bytes, bool)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"target_recall must be a number, got {value!r:.40}")
    target = float(value)
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target_recall must lie in (0, 1], got {value!r}")
    return target


_INT64_MAX = np.iinfo(np.int64).max
MAX_THREADS = _core.max_threads
# A result padded beyond the keys (faiss's convention for k > ntotal) may take at most this much.
MAX_PADDED_BYTES = 1 << 30


def as_num_threads(value) -> int:
    """Thread count; None: ``AMIPS_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs this
    process may run on (its affinity mask)."""
    if value is None:
        return _core.default_num_threads()
    value = as_positive_int(value, "num_threads")
    if value > MAX_THREADS:
        raise ValueError(f"num_threads must be at most {MAX_THREADS}, got {value}")
    return value


def as_k(k, available: int, rows: int, *, pad: bool = False, name: str = "keys") -> int:
    """``k`` as a positive int. Beyond the ``available`` keys: ValueError, or with ``pad`` (faiss's
    convention, rows padded with -inf / -1) allowed while the (rows, k) result of float32 scores
    and int64 ids stays within MAX_PADDED_BYTES."""
    k = as_positive_int(k, "k")
    if k > available:
        if not pad:
            raise ValueError(f"k = {k} exceeds the {available} {name}")
        if rows * k * 12 > MAX_PADDED_BYTES:
            raise ValueError(
                f"k = {k} exceeds the {available} {name}, and padding {rows} rows "
                f"to k would take {rows * k * 12 / 2**30:.1f} GiB"
            )
    return k


def as_int64(x, name: str, *, ndim: int) -> np.ndarray:
    """Return an integer array as C-contiguous int64 with ``ndim`` dimensions (an unsigned value
    above int64's range is refused, never wrapped)."""
    arr = _to_numpy(x, name)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > _INT64_MAX:
        raise ValueError(f"{name} holds {arr.max()}, beyond int64's range")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_key_ids(ids, n: int) -> np.ndarray:
    """Ids for ``n`` keys: (n,) int64, each in 0 .. 2**63 - 1 (-1 is the padding searches
    return, so no key may have it)."""
    ids = as_int64(ids, "ids", ndim=1)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} vectors")
    if len(ids) and ids.min() < 0:
        raise ValueError(f"ids must be non-negative, got {ids.min()}")
    return ids


def as_offsets(offsets, n: int) -> np.ndarray:
    """Segment offsets (C + 1,) int64, non-decreasing from 0 to ``n``, with C >= 1."""
    off = as_int64(offsets, "offsets", ndim=1)
    if len(off) < 2 or off[0] != 0 or off[-1] != n or np.any(np.diff(off) < 0):
        raise ValueError(
            f"offsets must rise from 0 to {n} over at least one segment, "
            f"got length {len(off)}: {off[:4]}...{off[-2:]}"
        )
    return off


def into_out(out, result: np.ndarray, name: str) -> np.ndarray:
    """``result``, written into the caller's array ``out`` when one is given (faiss's D= / I=)."""
    if out is None:
        return result
    if not isinstance(out, np.ndarray) or out.shape != result.shape or out.dtype != result.dtype:
        raise ValueError(
            f"{name} must be a {result.dtype} array of shape {result.shape}, "
            f"got {getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
        )
    out[...] = result
    return out
