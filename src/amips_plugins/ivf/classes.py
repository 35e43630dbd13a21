"""The faiss classes with a learned choice of lists: ``AmortizedIVF`` (the
``faiss.IndexIVFFlat`` drop-in) and one class for each of faiss's compressed IVF indexes."""

from __future__ import annotations

import faiss

from .._validation import DimensionError, as_positive_int
from ..xbox import XboxTransform
from .index import AmortizedIVFBase
from .state import AMORTIZED

__all__ = [
    "AmortizedIVF",
    "AmortizedIVFPQ",
    "AmortizedIVFPQFastScan",
    "AmortizedIVFScalarQuantizer",
]


class AmortizedIVF(AmortizedIVFBase, faiss.IndexIVFFlat):
    """``faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)`` whose lists are
    chosen by a learned model: a subclass of faiss's own class.

    Parameters
    ----------
    quantizer : faiss index or None
        The coarse quantizer, as for faiss (dimension d, or d + 1 with ``xbox``); None creates
        ``IndexFlatIP(d)`` (``IndexFlatL2(d + 1)`` with ``xbox``).
    d : int
        Dimension of keys and queries.
    nlist : int
        Number of inverted lists.
    metric : int
        Only ``faiss.METRIC_INNER_PRODUCT``.
    xbox : bool
        Cluster the Xbox-augmented keys [x, sqrt(M^2 - |x|^2)] under L2 (queries [q, 0]); the
        lists are still scanned by inner product, so scores stay q . x.
    query_transform : model or None
        A one-output model predicting the best key (see ``fit_query_transform``).
    router : router or None
        A ``MaxAffineRouter``, a model with ``nlist`` outputs (see ``fit_router``), or
        any object with the router protocol of ``amips_plugins.routing``.
    probe_union : bool or None
        Probe lists from the learned ranking and faiss's ranking for q in turn (pays the coarse
        step as well as the network); no effect without a learned part. None (the default): on
        with a max-affine router, where it measured best on GloVe and WordNet, off otherwise
        (with the SupportNet router on WordNet it cost a point).

    Notes
    -----
    Every faiss attribute and method is faiss's own (``nprobe``, ``max_codes``, ``quantizer``,
    ``invlists``, ``reconstruct``, ``range_search``, ``remove_ids``, ...), and faiss's functions
    and containers take the object as the IndexIVFFlat it is. The learned part applies where
    Python calls ``search``; ``search(x, k, params=faiss.SearchParametersIVF(nprobe=8))``
    sets nprobe (and ``max_codes``, ``sel``) for one call, safely beside other threads.

    What C++ sees is the plain IndexIVFFlat: ``faiss.write_index`` / ``serialize_index`` /
    ``clone_index``, and containers such as ``IndexShards`` / ``IndexReplicas`` /
    ``IndexPreTransform``, search it with faiss's quantizer and store no learned part. To keep
    the learned part use ``save`` / ``load``, ``pickle`` or ``copy.deepcopy``.
    With ``xbox`` the faiss index holds the augmented keys, so ``d`` (faiss's) is the key
    dimension + 1 and faiss's own methods take and return augmented vectors; ``train``,
    ``add`` and ``search`` take vectors of the key dimension.

    Differences: bad input raises ValueError / TypeError (also AssertionError for a wrong
    dimension and RuntimeError before training, as faiss raises), and ``last_search_stats``
    describes the latest search.
    Searching from several threads is safe, also while another thread adds, removes or resets
    (a search sees the keys before or after the change, never part of it).
    """

    def __init__(
        self,
        quantizer,
        d: int,
        nlist: int,
        metric=faiss.METRIC_INNER_PRODUCT,
        *,
        xbox: bool = False,
        query_transform=None,
        router=None,
        probe_union: bool | None = None,
    ):
        if metric != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(
                "AmortizedIVF searches by inner product (faiss.METRIC_INNER_PRODUCT); "
                "use faiss.IndexIVFFlat for other metrics"
            )
        d, nlist = as_positive_int(d, "d"), as_positive_int(nlist, "nlist")
        dim = d + 1 if xbox else d
        if quantizer is None:
            quantizer = faiss.IndexFlatL2(dim) if xbox else faiss.IndexFlatIP(dim)
        elif not isinstance(quantizer, faiss.Index):
            raise TypeError(f"quantizer must be a faiss index or None, got {quantizer!r:.100}")
        elif quantizer.d != dim:
            raise DimensionError(
                f"the quantizer has dimension {quantizer.d}; this index needs {dim}"
                f"{' (d + 1 with xbox)' if xbox else ''}"
            )
        super().__init__(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        self._init_learned(
            d, XboxTransform(d) if xbox else None, query_transform, router, probe_union
        )


class AmortizedIVFPQ(AmortizedIVFBase, faiss.IndexIVFPQ):
    """``faiss.IndexIVFPQ`` (inner product) whose lists are chosen by a learned model."""


class AmortizedIVFScalarQuantizer(AmortizedIVFBase, faiss.IndexIVFScalarQuantizer):
    """``faiss.IndexIVFScalarQuantizer`` (inner product) whose lists are chosen by a learned
    model."""


class AmortizedIVFPQFastScan(AmortizedIVFBase, faiss.IndexIVFPQFastScan):
    """``faiss.IndexIVFPQFastScan`` (inner product) whose lists are chosen by a learned model.
    faiss counts no statistics for its scan: ``distances`` counts the codes of the probed lists."""


AMORTIZED.update(
    {
        faiss.IndexIVFFlat: AmortizedIVF,
        faiss.IndexIVFPQ: AmortizedIVFPQ,
        faiss.IndexIVFScalarQuantizer: AmortizedIVFScalarQuantizer,
        faiss.IndexIVFPQFastScan: AmortizedIVFPQFastScan,
    }
)
if hasattr(faiss, "IndexIVFRaBitQ"):  # faiss >= 1.11

    class AmortizedIVFRaBitQ(AmortizedIVFBase, faiss.IndexIVFRaBitQ):
        """``faiss.IndexIVFRaBitQ`` (inner product) whose lists are chosen by a learned model."""

    AMORTIZED[faiss.IndexIVFRaBitQ] = AmortizedIVFRaBitQ
    __all__.append("AmortizedIVFRaBitQ")
