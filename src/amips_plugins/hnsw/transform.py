"""The learned query transform of an ``AmortizedHNSW``: the graph walked with the predicted best
key, what the walk finds ranked by its exact inner product with q (see ``Calibration._walk``)."""

from __future__ import annotations

from .state import HNSWState

__all__ = ["Transform"]


class Transform(HNSWState):
    """``query_transform`` and ``fit_query_transform``."""

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
