"""Maximum inner product search plugins for FAISS and hnswlib."""

from .datasets import MipsDataset, from_files, glove50
from .exact import ExactIndex, rescore, segment_max_dot, simd_level, topk_dot
from .ground_truth import ground_truth
from .xbox import XboxTransform

__version__ = "0.1.0"

# The learned parts need torch, which takes a second to import: load them on first use.
_LAZY = {
    "SupportNet": "models", "KeyNet": "models", "MaxAffineNet": "models", "load_model": "models",
    "width_for_budget": "models",
    "fit": "training", "fit_max_affine": "training", "compute_targets": "training", "augment_queries": "training",
    "QueryTransform": "transform",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ExactIndex",
    "KeyNet",
    "MaxAffineNet",
    "MipsDataset",
    "QueryTransform",
    "SupportNet",
    "XboxTransform",
    "augment_queries",
    "compute_targets",
    "fit",
    "fit_max_affine",
    "from_files",
    "glove50",
    "ground_truth",
    "load_model",
    "rescore",
    "segment_max_dot",
    "simd_level",
    "topk_dot",
    "width_for_budget",
]
