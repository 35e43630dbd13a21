"""Routers around a trained torch model (the learning part, imported only when one is used)."""

from __future__ import annotations

import numpy as np

from ..exact import topk_rows
from .centroids import centroids_for

__all__ = ["NetworkRouter", "PredictedKeyRouter", "is_torch_model", "load_torch_model"]


def is_torch_model(obj) -> bool:
    return hasattr(obj, "key_multiply_adds") and hasattr(obj, "state_dict")


def load_torch_model(data: bytes):
    """A saved SupportNet / KeyNet / MaxAffineNet (weights only, never pickled code)."""
    from ..learn.models import load_model

    return load_model(data)


class NetworkRouter:
    """Lists ranked by a SupportNet or KeyNet with one output per list (its predicted support
    value of each list)."""

    member = "router.pt"

    def __init__(self, model):
        from ..learn.transform import QueryTransform

        self.model = model
        self.dim, self.num_outputs = model.dim, model.num_outputs
        self._scores = QueryTransform(model).scores

    def rank(self, queries: np.ndarray, nprobe: int, index, params) -> np.ndarray:
        return topk_rows(self._scores(queries), nprobe)[1]

    def cost(self, index, nprobe: int) -> tuple[int, int]:
        return 2 * self.model.multiply_adds(), 0

    def to_bytes(self) -> bytes:
        return self.model.to_bytes()


class PredictedKeyRouter:
    """The quantizer's ranking for the best key a one-output model predicts instead of q (the
    lists are still scanned with q)."""

    member = "query_transform.pt"

    def __init__(self, model, dim: int, num_outputs: int):
        from ..learn.transform import key_predictor

        self.model = model
        self.dim, self.num_outputs = dim, num_outputs
        self._keys = key_predictor(model, dim).keys

    def rank(self, queries: np.ndarray, nprobe: int, index, params) -> np.ndarray:
        return centroids_for(self._keys(queries), nprobe, index, params)

    def cost(self, index, nprobe: int) -> tuple[int, int]:
        return 2 * self.model.key_multiply_adds(), index.nlist

    def to_bytes(self) -> bytes:
        return self.model.to_bytes()
