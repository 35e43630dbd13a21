"""Maximum inner product search plugins for FAISS and hnswlib."""

from .datasets import MipsDataset, from_files, glove50
from .exact import ExactIndex, rescore, segment_max_dot, simd_level, topk_dot
from .ground_truth import ground_truth
from .xbox import XboxTransform

__version__ = "0.1.0"

__all__ = [
    "ExactIndex",
    "MipsDataset",
    "XboxTransform",
    "from_files",
    "glove50",
    "ground_truth",
    "rescore",
    "segment_max_dot",
    "simd_level",
    "topk_dot",
]
