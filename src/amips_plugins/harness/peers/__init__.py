"""The methods measured side by side: the libraries' own indexes and ours, one module per
library (a new peer is a new module here, imported below).

Every method has ``build(keys)`` and ``search(queries, k, param) -> (ids, distances_per_query)``,
where ``param`` is the method's sweep knob (``nprobe`` or ``ef``) and ``distances_per_query`` the
number of inner products / distances computed per query (coarse step included), or NaN where the
library does not report it; after ``build``, ``distance_dim`` is the length of the vectors those
distances are computed on, ``network_flops`` the FLOPs per query of a learned model (0 without),
and ``fit_s`` (learned methods only) the seconds ``build`` spent training the learned part.
"""

from .faiss_indexes import FaissHNSW, FaissIVF, FaissIVFFastScanRefine
from .graphs import HnswlibIP, UsearchIP, VoyagerIP
from .ngt_index import NGT
from .ours import ExactSearch, LearnedIVF, OursHNSW, OursHNSWTargetRecall
from .scann_index import ScaNN
from .svs_index import SVSVamana

__all__ = [
    "ExactSearch",
    "FaissHNSW",
    "FaissIVF",
    "FaissIVFFastScanRefine",
    "HnswlibIP",
    "LearnedIVF",
    "NGT",
    "OursHNSW",
    "OursHNSWTargetRecall",
    "ScaNN",
    "SVSVamana",
    "UsearchIP",
    "VoyagerIP",
]
