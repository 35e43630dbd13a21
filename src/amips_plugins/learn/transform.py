"""Numpy in, numpy out inference for a trained SupportNet, KeyNet or MaxAffineNet."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import as_matrix, as_positive_int
from .models import SupportNet

__all__ = ["QueryTransform", "key_predictor"]


class QueryTransform:
    """Applies a trained model to batches of queries.

    ``keys(queries)`` returns the predicted best keys (n, d) of a one-output model;
    ``scores(queries)`` the predicted support values (n, C), e.g. per-cluster routing scores.
    The model runs in eval mode under ``torch.inference_mode`` (``no_grad`` where a SupportNet
    key needs its gradient), ``batch_size`` queries at a time.
    """

    def __init__(self, model, *, batch_size: int = 4096, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = as_positive_int(batch_size, "batch_size")
        self.dim, self.num_outputs = model.dim, model.num_outputs

    def _run(self, queries, fn, context, width: int) -> np.ndarray:
        q = as_matrix(queries, "queries", dim=self.dim)
        out = []
        with context():
            for a in range(0, len(q), self.batch_size):
                out.append(
                    fn(torch.from_numpy(q[a : a + self.batch_size]).to(self.device)).cpu().numpy()
                )
        if not out:
            return np.empty((0, width), np.float32)
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    def keys(self, queries) -> np.ndarray:
        """Predicted best keys, (n, d) float32 (one-output models only)."""
        if self.num_outputs != 1:
            raise ValueError(
                f"keys() needs a one-output model; this one has {self.num_outputs} outputs"
            )
        context = torch.no_grad if isinstance(self.model, SupportNet) else torch.inference_mode
        return self._run(queries, self.model.key, context, self.dim)

    def scores(self, queries) -> np.ndarray:
        """Predicted support values, (n, C) float32."""
        return self._run(queries, self.model.score, torch.inference_mode, self.num_outputs)

    __call__ = keys

    @property
    def key_flops_per_query(self) -> int:
        """FLOPs (2 per multiply-add) of one ``keys`` evaluation."""
        return 2 * self.model.key_multiply_adds()

    @property
    def score_flops_per_query(self) -> int:
        """FLOPs (2 per multiply-add) of one ``scores`` evaluation."""
        return 2 * self.model.multiply_adds()


def key_predictor(model, dim: int) -> QueryTransform:
    """A ``QueryTransform`` for ``model``, checked to be a one-output KeyNet, SupportNet or
    MaxAffineNet of ``dim`` (TypeError for another object, ValueError for another shape): the
    query transform an index wrapper accepts."""
    wanted = f"query_transform must be a one-output KeyNet, SupportNet or MaxAffineNet of dim {dim}"
    # Named by type and shape: a torch model's repr runs over many lines.
    if not hasattr(model, "key_multiply_adds"):
        raise TypeError(f"{wanted}, got {type(model).__name__}")
    if model.num_outputs != 1 or model.dim != dim:
        raise ValueError(
            f"{wanted}, got a {type(model).__name__} with dim {model.dim} "
            f"and num_outputs {model.num_outputs}"
        )
    return QueryTransform(model)
