"""The learned query transform of an ``AmortizedHNSW``: the graph searched with the predicted
best key, the candidates found rescored exactly with q."""

from __future__ import annotations

import numpy as np

from ..exact import rescore, topk_rows
from .state import HNSWState

__all__ = ["Transform"]


class Transform(HNSWState):
    """``query_transform``, ``fit_query_transform`` and hnswlib's own search with or without
    it."""

    @property
    def query_transform(self):
        return self._query_transform

    @query_transform.setter
    def query_transform(self, model) -> None:
        if model is not None:
            from ..learn.transform import key_predictor

            self._predictor = key_predictor(model, self.dim)
        self._query_transform = model
        self._stale.discard("query_transform")
        self._effort = None  # measured with another search path

    def fit_query_transform(self, keys, train_queries, model=None, **fit_kwargs) -> list[dict]:
        """Train ``model`` (default: a residual ``KeyNet(dim)``) on ``keys`` (those added), use it;
        ``fit_kwargs`` go to ``amips_plugins.fit``; returns its history."""
        from ..learn.models import KeyNet
        from ..learn.training import fit

        model = KeyNet(self.dim) if model is None else model
        history = fit(model, keys, train_queries, **fit_kwargs)
        self.query_transform = model
        return history

    def _knn_query(self, q, k, num_threads, filter, count):
        if self._query_transform is None:
            return self.index.knn_query(
                self._as_stored(q), k=k, num_threads=num_threads, filter=filter
            )
        # Search with the predicted key, then rank the candidates by their inner product with q.
        width = min(max(k, self.candidates), count)
        labels, _ = self.index.knn_query(
            self._as_stored(self._predictor.keys(q)),
            k=width,
            num_threads=num_threads,
            filter=filter,
        )
        vectors = np.asarray(self.index.get_items(labels.ravel()), dtype=np.float32)[:, : self.dim]
        scores = rescore(q, vectors, np.arange(labels.size, dtype=np.int64).reshape(labels.shape))
        _, best = topk_rows(scores, k)
        top = np.take_along_axis(scores, best, axis=1)
        return np.take_along_axis(labels, best, axis=1), (1.0 - top).astype(np.float32)
