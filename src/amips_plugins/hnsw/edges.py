"""Edges learned from the query distribution: ``fit_edges`` links the keys that answer the same
training query, on the graph's level 0, within the links its lists already have.

An HNSW graph links keys by their closeness to each other; the answers of one query can lie far
apart by that measure when queries are unlike keys (a short question against long documents),
so a walk that has found one answer must still search for the others. RoarGraph (Chen et al.,
VLDB 2024) projects each training query's edges to its answers onto the keys; this is the
simplest such projection: each training query's best key and its other answers become
neighbours both ways. hnswlib reserves 2 M links per element on level 0 and its heuristic keeps
far fewer (11.7 of 32 on average for WordNet + MiniLM at M 16), so the links fit in the
slots the graph already has: memory does not change, and hnswlib's file keeps them. Where the
graph filled those slots (``fill_lists``), a learned link takes the place of one the heuristic
would not choose, the worst first; the heuristic's own choices stay.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .._held_out import fingerprints, joined
from .._validation import as_positive_int
from .state import HNSWError, HNSWState, rows

__all__ = ["LearnedEdges"]


class LearnedEdges(HNSWState):
    """``fit_edges``."""

    def fit_edges(
        self, train_queries, answers: int = 20, *, ef: int = 100, num_threads: int = -1
    ) -> int:
        """Link, on level 0, each query's best key of ``train_queries`` (n, dim) with its other
        ``answers`` - 1 best keys, both ways, the links shared by most queries first, where an
        element lacks the link: in the room its list has, then in place of links that only
        filled it (see ``fill_lists``). Returns the number of links added.

        The answers are those a walk of the graph at ``ef`` finds (at ef 100, 97% of the exact
        top 20 on WordNet + MiniLM, at a fifth of the exact search's time). The links are kept as
        hnswlib keeps any: through ``save_index``, ``load_index`` and pickling; an insertion
        may prune them from a list that is full; keys added later get none. Use queries drawn as
        the searched ones will be, and calibrate on others: the index keeps a fingerprint of
        each query (8 bytes) and ``calibrate`` refuses queries that are mostly among them, as
        their answers are linked and their recall would overstate others'. A ``target_recall``
        search after this measures the calibration again (see ``calibrate``). Searches wait
        while it runs.
        """
        q = rows(train_queries, self.dim)
        answers = as_positive_int(answers, "answers")
        ef = as_positive_int(ef, "ef")
        if len(q) == 0:
            raise HNSWError("fit_edges needs at least one query")
        if answers < 2 or ef < answers:
            raise HNSWError(f"fit_edges needs 2 <= answers <= ef, got {answers} and {ef}")
        learned = fingerprints(q)  # before the lock: searches wait while it is held
        with self._graph_lock.writing():
            if answers > self._live_count():
                raise HNSWError(f"answers = {answers} exceeds the live elements in the index")
            graph = self._require_ready()
            stored = self._as_stored(q)
            efs = np.full(len(q), ef, np.int32)
            found = graph.search(stored, stored, answers, efs, self._threads(num_threads))[1]
            found = found[(found >= 0).all(axis=1)]  # walks that found fewer: no answers
            best = np.repeat(found[:, 0], answers - 1)
            others = found[:, 1:].ravel()
            pairs = np.concatenate([best, others]) * graph.size + np.concatenate([others, best])
            distinct, shared = np.unique(pairs, return_counts=True)
            pairs = distinct[np.argsort(-shared, kind="stable")]
            added = graph.link(pairs // graph.size, pairs % graph.size, self._threads(num_threads))
            if added:
                self._keys_version += 1  # the calibration measured the graph without them
            self._edge_queries = joined(self._edge_queries, learned)
        _core.release_free_memory()  # the answers' and pairs' arrays
        return added
