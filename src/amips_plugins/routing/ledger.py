"""The answers a fitted router stands for, kept true as keys come and go.

A router fitted from training queries (``MaxAffineRouter``, ``PieceGraphRouter``) holds as pieces
the keys that answered them: a query whose best key is a piece is sent to that key's list first.
A key added later is in no piece, so the queries it now answers go unrouted; a removed piece
routes to a key that is gone. The ledger keeps a sample of the training queries with their
current best key: each added key is checked against the queries it could win, and the keys that
win some query become pieces; the queries whose answer is removed get a new one.

Checking every new key against every query costs far more than faiss's own add (a key scored
against 35k queries is 8x faiss's add on GloVe), so the queries are grouped by direction
(spherical k-means, one group per list) and a key is checked against the queries of the
``GROUPS_CHECKED`` groups its direction scores highest, and only against the queries its norm
can beat (q . x <= |q| |x|, so x cannot win q when |x| <= score(q) / |q|), on the core
(``_core.take_better_answers``). Grown from half of GloVe's keys in 10 batches, checking 8 / 16 /
32 of 547 groups gave the queries whose best key is new a top-1 of 0.962 / 0.969 / 0.971 at the
fitted nprobe (0.991 where it is old), adding at 8.6 / 10.9 / 14.1 us a key; on WordNet + MiniLM
8 / 16 groups gave 0.930 / 0.935 (0.942 old) at 44 / 50 us.
"""

from __future__ import annotations

import io

import numpy as np

from .. import _core
from .._validation import as_matrix, as_num_threads
from ..effort import DirectionGroups
from ..exact import topk_dot

__all__ = ["AnswerLedger", "GROUPS_CHECKED"]

GROUPS_CHECKED = 16
HALF_LIMIT = 6e4  # below float16's largest value, 65504


class AnswerLedger:
    """Training queries (S, d) with their best key: ``scores`` (S,) float32 (-inf: no answer)
    and ``answers`` (S,) int64 key ids (-1: none), grouped by direction.

    Parameters
    ----------
    queries : array (S, d)
        Sorted by group: group g is rows ``offsets[g]:offsets[g + 1]``; kept as ``stored``
        says (float16 where they fit).
    scores, answers : arrays (S,)
        Each query's best inner product and the id of that key.
    centroids : array (G, d)
        The groups' unit directions.
    offsets : int array (G + 1,)
    """

    member = "ledger.npz"

    def __init__(self, queries, scores, answers, centroids, offsets):
        self.queries = self.stored(as_matrix(queries, "queries", allow_empty=False))
        self.scores = np.array(scores, np.float32)
        self.answers = np.array(answers, np.int64)
        self.groups = DirectionGroups(centroids)
        self.offsets = np.asarray(offsets, np.int64)
        s, g = len(self.queries), len(self.groups)
        if not (
            self.scores.shape == self.answers.shape == (s,)
            and self.groups.centroids.shape[1] == self.queries.shape[1]
            and self.offsets.shape == (g + 1,)
            and self.offsets[0] == 0
            and self.offsets[-1] == s
            and np.all(np.diff(self.offsets) > 0)
            and not np.isnan(self.scores).any()
        ):
            raise ValueError("an inconsistent answer ledger (shapes, groups or scores)")
        squares = np.einsum("ij,ij->i", self.queries, self.queries, dtype=np.float32)
        self._norms = np.maximum(np.sqrt(squares), 1e-30)

    @staticmethod
    def stored(queries: np.ndarray) -> np.ndarray:
        """The queries (S, d) as the ledger keeps them: float16 (half the memory; on WordNet +
        MiniLM the ledger is the largest learned part) where every component fits, else as
        given. Scores recorded in it are those of these values."""
        if queries.size and np.abs(queries).max() < HALF_LIMIT:
            return queries.astype(np.float16)
        return queries

    @classmethod
    def build(cls, queries, scores, answers, num_groups: int, seed: int = 0) -> AnswerLedger:
        """A ledger of ``queries`` (S, d) and their best keys, in ``num_groups`` direction
        groups (fewer where groups would be empty)."""
        groups, group_of = DirectionGroups.fit(queries, seed, num_groups=num_groups)
        order = np.argsort(group_of, kind="stable")
        offsets = np.searchsorted(group_of[order], np.arange(len(groups) + 1))
        return cls(queries[order], scores[order], answers[order], groups.centroids, offsets)

    def __len__(self) -> int:
        return len(self.queries)

    def winners(self, keys: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Take new keys (n, d) with their ``ids`` (n,) into account: every query a key beats
        gets it as its answer. Returns the rows of ``keys`` that are now some query's answer,
        and the handovers (2, h): each distinct pair of a query's previous answer (where it had
        one) and its new one."""
        none = np.empty(0, np.int64), np.empty((2, 0), np.int64)
        if len(keys) == 0:
            return none
        bound = self.scores / self._norms  # x can only win q where |x| > bound
        group_bound = np.minimum.reduceat(bound, self.offsets[:-1])
        norms = np.linalg.norm(keys, axis=1)
        alive = np.flatnonzero(norms > group_bound.min())
        if len(alive) == 0:
            return none
        alive = alive[np.argsort(-norms[alive], kind="stable")]  # longest first
        # every key to the groups its direction scores highest, where its norm passes the bound
        width = min(GROUPS_CHECKED, len(self.groups))
        _, near = topk_dot(keys[alive], self.groups.centroids, width)
        group, key = near.ravel(), np.repeat(alive, width)
        passes = norms[key] > group_bound[group]
        group, key = group[passes], key[passes]
        # by group, each group's keys longest first (a stable sort keeps their order); as 16-bit
        # numbers, numpy sorts them by radix: a lexsort by group and norm took a fifth of the check
        small = group.astype(np.uint16) if len(self.groups) <= 1 << 16 else group
        order = np.argsort(small, kind="stable")
        key_offsets = np.searchsorted(group[order], np.arange(len(self.groups) + 1))
        before = self.answers  # the core returns new arrays
        self.scores, self.answers, changed = _core.take_better_answers(
            self.queries,
            self._norms,
            self.offsets,
            self.scores,
            self.answers,
            keys,
            norms,
            ids,
            key_offsets,
            key[order],
            as_num_threads(None),
        )
        changed = changed.view(bool)
        pairs = np.stack([before[changed], self.answers[changed]])
        won = np.unique(pairs[1])
        handovers = np.unique(pairs[:, pairs[0] >= 0], axis=1)
        return np.flatnonzero(np.isin(ids, won)), handovers

    def orphan(self, removed_ids: np.ndarray) -> np.ndarray:
        """Forget answers that were removed: returns the rows of the queries that lost theirs
        (now answer -1, score -inf)."""
        rows = np.flatnonzero(np.isin(self.answers, removed_ids))
        self.answers[rows], self.scores[rows] = -1, -np.inf
        return rows

    def answer(self, rows: np.ndarray, scores: np.ndarray, answers: np.ndarray) -> None:
        """Set the best key of the queries at ``rows``."""
        self.scores[rows], self.answers[rows] = scores, answers

    def nbytes(self) -> int:
        return self.queries.nbytes + self.scores.nbytes + self.answers.nbytes + self._norms.nbytes

    # --- files --------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            queries=self.queries,
            scores=self.scores,
            answers=self.answers,
            centroids=self.groups.centroids,
            offsets=self.offsets,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> AnswerLedger:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            names = ("queries", "scores", "answers", "centroids", "offsets")
            missing = set(names) - set(stored.files)
            if missing:
                raise ValueError(f"an answer ledger without {sorted(missing)}")
            return cls(*(stored[name] for name in names))

    def __repr__(self) -> str:
        return f"AnswerLedger({len(self)} queries in {len(self.groups)} direction groups)"
