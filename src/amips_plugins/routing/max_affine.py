"""A learned IVF router: a max-affine lower bound of every list's support function.

For a list c of keys, sigma_c(q) = max_{x in c} q . x is convex and 1-homogeneous, and any
keys of the list (or convex combinations of them, such as the list mean) give the lower bound
max_{p in P_c} q . p <= sigma_c(q), itself convex and 1-homogeneous: an input-convex network of
one max-affine layer whose gradient (the best piece) is a predicted key. The pieces are learned
from training queries: each list's mean plus the keys that were the exact MIPS answer for the
most training queries. Ranking lists by this bound sends a query whose best key is a piece to
that key's list first, and costs one inner product per piece, scored on the C++ core.
"""

from __future__ import annotations

import io
import threading

import numpy as np
from numpy.typing import ArrayLike

from .. import _core
from .._packed import pack_rows
from .._validation import as_int64, as_matrix, as_num_threads, as_offsets, as_positive_int
from ..exact import topk_dot

__all__ = ["MaxAffineRouter", "most_winning_keys", "principal_directions"]


def most_winning_keys(keys: np.ndarray, answers: np.ndarray, num_pieces: int) -> np.ndarray:
    """Ids of the ``num_pieces`` keys that are the exact top-1 (``answers``: key ids, one per
    query) of the most queries (ties: larger norm), fewer if fewer keys ever win: the pieces of a
    max-affine support function that is exact for every query whose answer is among them."""
    num_pieces = as_positive_int(num_pieces, "num_pieces")
    wins = np.bincount(answers, minlength=len(keys))
    norms = np.einsum("ij,ij->i", keys, keys)
    return np.lexsort((-norms, -wins))[: min(num_pieces, int((wins > 0).sum()))]


def principal_directions(queries: np.ndarray, dim: int) -> np.ndarray:
    """The top ``dim`` principal directions of ``queries`` (their second moment), (d, dim)."""
    q64 = queries.astype(np.float64)
    _, vectors = np.linalg.eigh(q64.T @ q64)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, :dim], dtype=np.float32)


class MaxAffineRouter:
    """Per-list support values max_{p in P_c} q . p from pieces grouped by list.

    Parameters
    ----------
    pieces : array (m, d), grouped so that list c's pieces are rows ``offsets[c]:offsets[c + 1]``
    offsets : int array (C + 1,), non-decreasing from 0 to m; a list without pieces scores -inf
    projection : optional array (D, d): queries of dimension D are scored as ``q @ projection``
        against pieces projected the same way (an approximate, cheaper router; see ``fit``)
    piece_ids : optional int array (m,): the id of the key each piece is (-1: a list mean, or
        not known), so that ``remove_pieces`` can drop the pieces of removed keys
    """

    def __init__(
        self,
        pieces: ArrayLike,
        offsets: ArrayLike,
        projection: ArrayLike | None = None,
        piece_ids: ArrayLike | None = None,
    ):
        self.pieces = as_matrix(pieces, "pieces", allow_empty=False)
        self.offsets = as_offsets(offsets, len(self.pieces))
        self.piece_ids = (
            np.full(len(self.pieces), -1, np.int64)
            if piece_ids is None
            else as_int64(piece_ids, "piece_ids", ndim=1)
        )
        if len(self.piece_ids) != len(self.pieces):
            raise ValueError(f"{len(self.piece_ids)} piece_ids for {len(self.pieces)} pieces")
        self.projection: np.ndarray | None = None
        self.dim = self.pieces.shape[1]
        if projection is not None:
            self.projection = as_matrix(projection, "projection", allow_empty=False)
            if self.projection.shape[1] != self.pieces.shape[1]:
                raise ValueError(
                    f"projection {self.projection.shape} does not map onto the pieces' "
                    f"dimension {self.pieces.shape[1]}"
                )
            self.dim = self.projection.shape[0]
        self.num_outputs = len(self.offsets) - 1
        self._packing = threading.Lock()
        self._packed_rows: tuple[np.ndarray, int, np.ndarray] | None = None

    @property
    def _packed(self) -> tuple[np.ndarray, int, np.ndarray]:
        """The pieces packed once (validated above), again after they change: one query's
        scores then cost the inner products alone."""
        with self._packing:
            if self._packed_rows is None:
                self._packed_rows = pack_rows(self.pieces)
            return self._packed_rows

    @classmethod
    def fit(
        cls,
        keys: ArrayLike,
        offsets: ArrayLike,
        queries: ArrayLike,
        num_pieces: int,
        *,
        dim: int | None = None,
        num_threads: int | None = None,
        ids: ArrayLike | None = None,
    ) -> MaxAffineRouter:
        """Pieces for keys grouped into lists by ``offsets``: every non-empty list's mean, plus the
        ``num_pieces`` keys that are the exact top-1 of the most ``queries`` (ties: larger norm).

        Parameters
        ----------
        keys : array (n, d), grouped by list
        offsets : int array (C + 1,)
        queries : array (nq, d), training queries
        num_pieces : keys to keep beyond the list means (fewer if fewer keys ever win)
        dim : score in this many dimensions: the pieces and queries projected on the top ``dim``
            principal directions of the training queries (their second moment), which keeps
            the part of q . x that queries like these have most of; costs dim / d of the full
            router's multiply-adds (plus the projection, d * dim) and some accuracy
        """
        x = as_matrix(keys, "keys", allow_empty=False)
        off = as_offsets(offsets, len(x))
        q = as_matrix(queries, "queries", dim=x.shape[1], allow_empty=False)
        _, best = topk_dot(q, x, 1, num_threads=as_num_threads(num_threads))
        projection = None
        if dim is not None and as_positive_int(dim, "dim") < x.shape[1]:
            projection = principal_directions(q, dim)
        key_ids = None if ids is None else as_int64(ids, "ids", ndim=1)
        return cls.from_answers(x, off, best[:, 0], num_pieces, projection, key_ids)

    @classmethod
    def from_answers(
        cls,
        keys: np.ndarray,
        offsets: np.ndarray,
        answers: np.ndarray,
        num_pieces: int,
        projection: np.ndarray | None = None,
        ids: np.ndarray | None = None,
    ) -> MaxAffineRouter:
        """``fit`` from the training queries' exact top-1 ``answers`` (rows of ``keys``),
        for checked ``keys`` and ``offsets``; ``projection`` as for ``from_parts``; ``ids``
        the keys' ids (default: unknown)."""
        winners = most_winning_keys(keys, answers, num_pieces)
        list_of_key = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        sizes = np.diff(offsets)
        sums = np.add.reduceat(keys, offsets[:-1][sizes > 0], axis=0)
        means = np.zeros((len(sizes), keys.shape[1]), np.float32)
        means[sizes > 0] = sums / sizes[sizes > 0, None]
        winner_ids = None if ids is None else ids[winners]
        return cls.from_parts(
            means, sizes, keys[winners], list_of_key[winners], projection, winner_ids
        )

    @classmethod
    def from_parts(
        cls,
        means: np.ndarray,
        sizes: np.ndarray,
        keys: np.ndarray,
        lists: np.ndarray,
        projection: np.ndarray | None = None,
        ids: np.ndarray | None = None,
    ) -> MaxAffineRouter:
        """The pieces of ``fit`` from its parts: every list's mean (C, d) and size (C,) (an
        empty list gets no mean), and the chosen ``keys`` (m, d) with their ``lists`` (m,) and
        ``ids`` (m,, default unknown); with a ``projection`` (d, r), the pieces are scored in
        its r dimensions."""
        has_mean = np.flatnonzero(sizes > 0)
        owner = np.concatenate([has_mean, lists])
        pieces = np.concatenate([means[has_mean], keys]).astype(np.float32)
        if projection is not None:
            pieces = pieces @ projection
        piece_ids = np.concatenate(
            [np.full(len(has_mean), -1), np.full(len(keys), -1) if ids is None else ids]
        )
        order = np.argsort(owner, kind="stable")
        offsets = np.searchsorted(owner[order], np.arange(len(sizes) + 1))
        return cls(pieces[order], offsets, projection, piece_ids[order])

    # --- pieces as keys come and go -----------------------------------------------------------
    def add_pieces(self, keys: np.ndarray, lists: np.ndarray, ids: np.ndarray) -> None:
        """Make the keys (n, d) of the given ``lists`` (n,) and ``ids`` (n,) pieces (projected
        as the others are); each list's pieces stay together."""
        if len(keys) == 0:
            return
        new = keys @ self.projection if self.projection is not None else keys
        owner = np.concatenate(
            [np.repeat(np.arange(self.num_outputs), np.diff(self.offsets)), lists]
        )
        order = np.argsort(owner, kind="stable")
        self._set(
            np.concatenate([self.pieces, new.astype(np.float32)])[order],
            np.searchsorted(owner[order], np.arange(self.num_outputs + 1)),
            np.concatenate([self.piece_ids, ids])[order],
        )

    def remove_pieces(self, ids: np.ndarray) -> int:
        """Drop the pieces that are the keys ``ids``; returns how many were dropped."""
        gone = np.isin(self.piece_ids, ids) & (self.piece_ids >= 0)
        if gone.any():
            kept = np.cumsum(np.r_[0, ~gone])  # kept pieces before each offset
            self._set(self.pieces[~gone], kept[self.offsets], self.piece_ids[~gone])
        return int(gone.sum())

    def _set(self, pieces: np.ndarray, offsets: np.ndarray, piece_ids: np.ndarray) -> None:
        with self._packing:
            self.pieces, self.offsets, self.piece_ids = pieces, offsets, piece_ids
            self._packed_rows = None

    def scores(self, queries: ArrayLike, *, num_threads: int | None = None) -> np.ndarray:
        """Predicted support value of every list, (n, C) float32."""
        q = as_matrix(queries, "queries", dim=self.dim)
        return self._scores(q, as_num_threads(num_threads))

    def _scores(self, q: np.ndarray, threads: int) -> np.ndarray:
        if self.projection is not None:
            q = q @ self.projection
        return _core.segment_max_dot_packed(q, *self._packed, self.offsets, threads)[0]

    def multiply_adds(self) -> int:
        """Multiply-adds per query: one inner product per piece (and the projection's)."""
        return self.pieces.size + (0 if self.projection is None else self.projection.size)

    # --- the router protocol (amips_plugins.routing) ----------------------------------------
    member = "router.npz"

    def rank(self, queries: np.ndarray, nprobe: int, index, params) -> np.ndarray:
        threads = as_num_threads(None)
        return _core.topk_rows(
            self._scores(queries, threads), min(nprobe, self.num_outputs), threads
        )[1]

    def cost(self, index, nprobe: int) -> tuple[int, int]:
        return 2 * self.multiply_adds(), 0

    def to_bytes(self) -> bytes:
        arrays = io.BytesIO()
        np.savez(arrays, **self.state_dict())
        return arrays.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> MaxAffineRouter:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls.from_state_dict(dict(arrays))

    def state_dict(self) -> dict:
        state = {"pieces": self.pieces, "offsets": self.offsets, "piece_ids": self.piece_ids}
        if self.projection is not None:
            state["projection"] = self.projection
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> MaxAffineRouter:
        return cls(
            state["pieces"], state["offsets"], state.get("projection"), state.get("piece_ids")
        )

    def __repr__(self) -> str:
        pieces, lists = len(self.pieces), self.num_outputs
        scored = "" if self.projection is None else f", scored in {self.pieces.shape[1]}"
        return f"MaxAffineRouter({pieces} pieces over {lists} lists, dim {self.dim}{scored})"
