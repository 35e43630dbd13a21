"""AmortizedIVF: ``faiss.IndexIVFFlat`` whose lists are chosen by a learned model.

The search itself stays faiss's: the lists to probe are computed here and handed to
``search_preassigned``, which scans them with the original query, so the scores are faiss's own
inner products with q. Choosing the lists:

- no learned part: faiss's quantizer ranks the centroids for q (results equal faiss's own search);
- ``router`` (a ``MaxAffineRouter``, or a model with one output per list): lists ranked by
  the predicted support value of each list; no coarse quantizer step;
- ``query_transform`` (a one-output KeyNet, SupportNet or MaxAffineNet): the quantizer ranks the
  centroids for the predicted best key instead of q. The chosen lists are then scanned with q
  itself, which finds every key that gathering candidates with the predicted key and rescoring
  them with q would find, at the same cost;
- ``probe_union`` with a learned part: the learned ranking and faiss's ranking for q taken in turn
  (learned first, then faiss's first, then the second of each, ...), duplicates skipped, until
  nprobe lists are chosen.

Compressed lists (PQ fast-scan, SQ, RaBitQ) can be re-ranked from raw keys the index keeps (a
factory string ending ``",RFlat"``, or ``",Refine(SQfp16)"`` for float16 raw keys): the scan's
best ``k * k_factor`` candidates are scored again from them.

One module per concern: ``classes`` (the faiss classes), ``index`` (their shared base:
construction and faiss's methods), ``search``, ``learned`` (router, query transform and
their fitting), ``calibration`` (``target_recall``), ``refine`` (re-ranking from raw keys),
``upkeep`` (changes of keys), ``files`` (save, load, pickle) and ``state`` (what they share).
"""

from . import classes
from .calibration import FIRST_LISTS, K_FACTORS
from .classes import (
    AmortizedIVF,
    AmortizedIVFPQ,
    AmortizedIVFPQFastScan,
    AmortizedIVFScalarQuantizer,
)
from .index import AmortizedIVFBase
from .state import NotTrainedError

__all__ = [
    "FIRST_LISTS",
    "K_FACTORS",
    "AmortizedIVF",
    "AmortizedIVFBase",
    "AmortizedIVFPQ",
    "AmortizedIVFPQFastScan",
    "AmortizedIVFScalarQuantizer",
    "NotTrainedError",
]
if hasattr(classes, "AmortizedIVFRaBitQ"):  # faiss >= 1.11
    AmortizedIVFRaBitQ = classes.AmortizedIVFRaBitQ
    __all__.append("AmortizedIVFRaBitQ")
