"""Maximum inner product search plugins for FAISS and hnswlib."""

from .exact import ExactIndex, rescore, segment_max_dot, simd_level, topk_dot
from .xbox import XboxTransform

__version__ = "0.1.0"

__all__ = [
    "ExactIndex",
    "XboxTransform",
    "rescore",
    "segment_max_dot",
    "simd_level",
    "topk_dot",
]
