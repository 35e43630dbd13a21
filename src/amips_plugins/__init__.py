"""Maximum inner product search for FAISS and hnswlib.

The search library lives here: exact top-k on the C++ core (``topk_dot``,
``ExactIndex``), the Xbox transform, the max-affine IVF router and the index wrappers
``AmortizedIVF`` (faiss) and ``AmortizedHNSW`` (hnswlib). The learned networks
(``amips_plugins.learn``, needs torch) and the measuring harness (``amips_plugins.harness``:
data sets, evaluation, the ``amips`` command) are subpackages; nothing here imports them, and the
names below that need faiss, hnswlib or torch are loaded on first use.
"""

import importlib
import logging

from ._freshness import StaleCalibrationError, StaleWarning
from .exact import rescore, segment_max_dot, simd_level, topk_dot, topk_rows
from .ground_truth import ground_truth
from .routing import MaxAffineRouter, PieceGraphRouter
from .xbox import XboxTransform

__version__ = "0.2.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# name -> module that defines it, imported when the name is first used.
_LAZY = {
    "AmortizedIVF": ".ivf",
    "ExactIndex": ".flat",
    "AmortizedHNSW": ".hnsw",
    **dict.fromkeys(
        ["SupportNet", "KeyNet", "MaxAffineNet", "load_model", "width_for_budget"], ".learn.models"
    ),
    **dict.fromkeys(
        ["fit", "fit_max_affine", "compute_targets", "augment_queries"], ".learn.training"
    ),
    "QueryTransform": ".learn.transform",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AmortizedHNSW",
    "AmortizedIVF",
    "ExactIndex",
    "KeyNet",
    "MaxAffineNet",
    "MaxAffineRouter",
    "PieceGraphRouter",
    "QueryTransform",
    "StaleCalibrationError",
    "StaleWarning",
    "SupportNet",
    "XboxTransform",
    "__version__",
    "augment_queries",
    "compute_targets",
    "fit",
    "fit_max_affine",
    "ground_truth",
    "load_model",
    "rescore",
    "segment_max_dot",
    "simd_level",
    "topk_dot",
    "topk_rows",
    "width_for_budget",
]
