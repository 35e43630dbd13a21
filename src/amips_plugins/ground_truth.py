"""Exact top-k ground truth on the C++ core, computed in chunks and cached on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._io import cached_arrays, default_cache_dir
from ._progress import Progress, ProgressArg
from ._validation import as_int64, as_k, as_matrix, as_num_threads, as_positive_int

__all__ = ["ground_truth", "segment_ground_truth", "default_cache_dir"]

_FORMAT_VERSION = 1


def _fingerprint(tag: str, *arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tag}:{_FORMAT_VERSION}:{[a.shape for a in arrays]}".encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).data.cast("B"))
    return h.hexdigest()


def _cached(cache_dir, tag: str, inputs: tuple, shape: tuple, compute):
    """(scores, ids) from the cache entry for ``inputs``, or ``compute()`` stored there. An entry
    is used only if it could be a result: the shape, float32 scores, int64 ids of the keys
    (``inputs[0]``) or -1."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir).expanduser() / f"{tag}-{_fingerprint(tag, *inputs)}.npz"
    num_keys = len(inputs[0])

    def plausible(a: list[np.ndarray]) -> bool:
        return (
            len(a) == 2
            and a[0].shape == a[1].shape == shape
            and a[0].dtype == np.float32
            and a[1].dtype == np.int64
            and bool(((a[1] >= -1) & (a[1] < num_keys)).all())
        )

    scores, ids = cached_arrays(path, compute, plausible)
    return scores, ids


def _chunked(
    fn, queries: np.ndarray, width: int, chunk_size: int, progress: ProgressArg, desc: str
):
    """Runs fn(query chunk) -> (scores, ids) over chunks, so Ctrl-C stops between chunks."""
    scores = np.empty((len(queries), width), np.float32)
    ids = np.empty((len(queries), width), np.int64)
    with Progress(progress, len(queries), desc, unit="query") as bar:
        for a in range(0, len(queries), chunk_size):
            scores[a : a + chunk_size], ids[a : a + chunk_size] = fn(queries[a : a + chunk_size])
            bar.update(min(chunk_size, len(queries) - a))
    return scores, ids


def ground_truth(
    keys: ArrayLike,
    queries: ArrayLike,
    k: int = 1,
    *,
    cache_dir: str | os.PathLike | None = None,
    chunk_size: int = 2048,
    num_threads: int | None = None,
    progress: ProgressArg = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k keys of every query, as ``amips_plugins.topk_dot`` returns them.

    With ``cache_dir`` the result is stored under a hash of the keys, queries and k and read back
    on the next call. Work proceeds in chunks of queries, so Ctrl-C stops it between chunks
    (nothing is written then). ``progress``: True for a tqdm bar, or a callable(done, total).

    Returns
    -------
    scores : float32 (nq, k); ids : int64 (nq, k)
    """
    x = as_matrix(keys, "keys", allow_empty=False)
    q = as_matrix(queries, "queries", dim=x.shape[1])
    k = as_k(k, len(x), len(q))
    chunk_size = as_positive_int(chunk_size, "chunk_size")
    threads = as_num_threads(num_threads)

    return _cached(
        cache_dir,
        "ground_truth",
        (x, q, np.array([k])),
        (len(q), k),
        lambda: _chunked(
            lambda c: _core.topk_dot(c, x, k, threads), q, k, chunk_size, progress, "ground truth"
        ),
    )


def segment_ground_truth(
    keys: ArrayLike,
    queries: ArrayLike,
    offsets: ArrayLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    chunk_size: int = 2048,
    num_threads: int | None = None,
    progress: ProgressArg = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Best key of every segment for each query (see ``amips_plugins.segment_max_dot``),
    computed in chunks and cached like ``ground_truth``.

    Returns
    -------
    scores : float32 (nq, C); ids : int64 (nq, C), -inf / -1 for empty segments
    """
    x = as_matrix(keys, "keys", allow_empty=False)
    q = as_matrix(queries, "queries", dim=x.shape[1])
    off = as_int64(offsets, "offsets", ndim=1)
    chunk_size = as_positive_int(chunk_size, "chunk_size")
    threads = as_num_threads(num_threads)
    C = len(off) - 1
    return _cached(
        cache_dir,
        "segment_ground_truth",
        (x, q, off),
        (len(q), C),
        lambda: _chunked(
            lambda c: _core.segment_max_dot(c, x, off, threads),
            q,
            C,
            chunk_size,
            progress,
            "segment ground truth",
        ),
    )
