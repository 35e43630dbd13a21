"""Exact top-k ground truth on the C++ core, computed in chunks and cached on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from . import _core
from ._io import atomic_path
from ._validation import as_matrix, as_num_threads, as_positive_int

__all__ = ["ground_truth", "default_cache_dir"]

_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$AMIPS_CACHE_DIR``, else ``~/.cache/amips_plugins``."""
    return Path(os.environ.get("AMIPS_CACHE_DIR", Path.home() / ".cache" / "amips_plugins"))


def _fingerprint(keys: np.ndarray, queries: np.ndarray, k: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"gt{_FORMAT_VERSION}:{keys.shape}:{queries.shape}:{k}".encode())
    h.update(memoryview(keys).cast("B"))
    h.update(memoryview(queries).cast("B"))
    return h.hexdigest()


def ground_truth(
    keys,
    queries,
    k: int = 1,
    *,
    cache_dir: str | os.PathLike | None = None,
    chunk_size: int = 2048,
    num_threads: int | None = None,
    progress: bool = True,
):
    """Exact top-k keys of every query, as :func:`amips_plugins.topk_dot` returns them.

    With ``cache_dir`` the result is stored under a hash of the keys, queries and k and read back
    on the next call. Work proceeds in chunks of queries, so Ctrl-C stops it between chunks
    (nothing is written then).

    Returns
    -------
    scores : float32 (nq, k); ids : int64 (nq, k)
    """
    x = as_matrix(keys, "keys", allow_empty=False)
    q = as_matrix(queries, "queries", dim=x.shape[1])
    k = as_positive_int(k, "k")
    chunk_size = as_positive_int(chunk_size, "chunk_size")
    threads = as_num_threads(num_threads)

    path = None
    if cache_dir is not None:
        path = Path(cache_dir).expanduser() / f"ground_truth-{_fingerprint(x, q, k)}.npz"
        if path.is_file():
            try:
                with np.load(path) as f:
                    scores, ids = f["scores"], f["ids"]
                if scores.shape == ids.shape == (len(q), k):
                    return scores, ids
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache entry: compute again and replace it

    from tqdm.auto import tqdm

    scores = np.empty((len(q), k), np.float32)
    ids = np.empty((len(q), k), np.int64)
    with tqdm(total=len(q), desc="ground truth", unit="query", disable=not progress) as bar:
        for a in range(0, len(q), chunk_size):
            scores[a : a + chunk_size], ids[a : a + chunk_size] = _core.topk_dot(
                q[a : a + chunk_size], x, k, threads
            )
            bar.update(min(chunk_size, len(q) - a))
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, scores=scores, ids=ids)
    return scores, ids
