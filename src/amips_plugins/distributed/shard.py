"""One shard of a ``amips_plugins.distributed.ShardedIVF``: the keys of some lists, in
an AmortizedIVF, run by a Ray actor (a plain class here, so that it can be used and tested
without Ray). Every shard has the whole trained quantizer; ids are the sharded index's."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import faiss
import numpy as np

from .._io import atomic_path
from ..exact import topk_dot
from ..ivf import AmortizedIVFBase

__all__ = ["Shard"]


class Shard:
    """An AmortizedIVF holding part of the keys. A compressed index cannot give its keys back
    exactly, so there the shard also keeps the raw keys it was given (for exact answers and the
    router's pieces); an IndexIVFFlat's own rows are those keys."""

    def __init__(self, index: AmortizedIVFBase | None, num_threads: int = 1):
        """``index``: the keys' index, or None: one is read by ``load`` (an actor reads its file
        in a call rather than its constructor, so that a bad file is a ValueError, not a dead
        actor)."""
        faiss.omp_set_num_threads(num_threads)
        self.num_threads = num_threads
        self._index = index
        self.raw: tuple[np.ndarray, np.ndarray] | None = None  # (ids ascending, keys)
        if index is not None and not isinstance(index, faiss.IndexIVFFlat):
            self.raw = (np.empty(0, np.int64), np.empty((0, index.d), np.float32))

    def load(self, path: str) -> int:
        """Read the shard ``save`` wrote at ``path``, returning its number of keys; a corrupt or
        inconsistent file: ValueError naming it."""
        index = AmortizedIVFBase.load(path)
        raw = None
        if not isinstance(index, faiss.IndexIVFFlat):
            raw_path = _raw_path(path)
            try:
                with np.load(raw_path, allow_pickle=False) as arrays:
                    raw = (arrays["ids"], arrays["keys"])
            except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
                raise ValueError(
                    f"{raw_path} is not a readable shard keys file ({type(e).__name__}: {e})"
                ) from None
            if not len(raw[0]) == len(raw[1]) == index.ntotal:
                raise ValueError(
                    f"{raw_path}: {len(raw[0])} ids and {len(raw[1])} raw keys for "
                    f"{index.ntotal} codes"
                )
        self._index, self.raw = index, raw
        return self.ntotal()

    @property
    def index(self) -> AmortizedIVFBase:
        if self._index is None:
            raise RuntimeError("this shard holds no index yet: load one")
        return self._index

    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add_with_ids(self, x: np.ndarray, ids: np.ndarray) -> int:
        self.index.add_with_ids(x, ids)
        if self.raw is not None:
            all_ids = np.concatenate([self.raw[0], ids])
            order = np.argsort(all_ids, kind="stable")
            self.raw = (all_ids[order], np.concatenate([self.raw[1], x])[order])
        return self.ntotal()

    def remove_ids(self, ids: np.ndarray) -> int:
        """Remove the keys of ``ids`` (what undoes a failed add), returning how many went."""
        removed = self.index.remove_ids(ids)
        if self.raw is not None:
            keep = ~np.isin(self.raw[0], ids)
            self.raw = (self.raw[0][keep], self.raw[1][keep])
        return removed

    def search_lists(self, q: np.ndarray, k: int, lists: np.ndarray):
        """(D, I, distances computed, seconds) for the queries' lists held here."""
        start = time.perf_counter()
        D, I = self.index.search_lists(q, k, lists)
        distances = self.index.last_search_stats["distances"] * len(q)
        return D, I, distances, time.perf_counter() - start

    def _grouped(self):
        """(keys grouped by list, offsets (nlist + 1,), ids)."""
        if self.raw is None:
            return self.index.grouped_keys()
        ids, keys = self.raw
        offsets, grouped_ids = self.index.list_ids()
        return keys[np.searchsorted(ids, grouped_ids)], offsets, grouped_ids

    def exact_topk(self, q: np.ndarray, k: int):
        """The exact top-k (at most ntotal) of the keys here: (scores, ids)."""
        keys, _, ids = self._grouped()
        if len(keys) == 0:
            return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
        scores, rows = topk_dot(q, keys, min(k, len(keys)), num_threads=self.num_threads)
        return scores, ids[rows]

    def list_sums(self):
        """Every list's sum of keys (nlist, d) float32 and size (nlist,): the lists' means, summed
        in the order a single index sums them."""
        keys, offsets, _ = self._grouped()
        sizes = np.diff(offsets)
        sums = np.zeros((len(sizes), keys.shape[1]), np.float32)
        if len(keys):
            sums[sizes > 0] = np.add.reduceat(keys, offsets[:-1][sizes > 0], axis=0)
        return sums, sizes

    def keys_of(self, wanted: np.ndarray):
        """For the ``wanted`` ids held here: (ids, keys, lists)."""
        keys, offsets, ids = self._grouped()
        rows = np.flatnonzero(np.isin(ids, wanted))
        lists = np.searchsorted(offsets, rows, side="right") - 1
        return ids[rows], keys[rows], lists

    def save(self, path: str) -> None:
        self.index.save(path)
        if self.raw is not None:
            with atomic_path(_raw_path(path)) as tmp, open(tmp, "wb") as f:
                np.savez(f, ids=self.raw[0], keys=self.raw[1])


def _raw_path(path: str) -> Path:
    return Path(path).with_suffix(".keys.npz")
