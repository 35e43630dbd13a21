"""Ways to choose the lists an IVF search probes.

A router ranks the lists of an ``amips_plugins.AmortizedIVF`` for a batch of queries. It
is any object with:

- ``dim``, ``num_outputs``: the query dimension and the number of lists it ranks;
- ``rank(queries, nprobe, index, params) -> lists``: for queries (n, dim) float32, the (n, nprobe)
  int64 lists to probe, best first (-1 where fewer exist); ``params`` is the caller's
  ``faiss.SearchParametersIVF`` or None;
- ``cost(index, nprobe) -> (network_flops, coarse_distances)`` per query: FLOPs of a learned
  model, and distances to the index's centroids (each ``index.d`` multiply-adds);
- ``member``, ``to_bytes()``: the archive member an AmortizedIVF file keeps it in, and its bytes
  (routers built from an index's settings need none).

A new router is one module here, plus its entry in ``LOADERS`` to be read back from files.
"""

from __future__ import annotations

from .centroids import CentroidRouter
from .graph import PieceGraphRouter
from .in_turn import InTurn
from .max_affine import MaxAffineRouter, most_winning_keys
from .network import NetworkRouter, PredictedKeyRouter, load_torch_model

__all__ = [
    "CentroidRouter",
    "InTurn",
    "LOADERS",
    "MaxAffineRouter",
    "NetworkRouter",
    "PieceGraphRouter",
    "PredictedKeyRouter",
    "is_router",
    "most_winning_keys",
]

# archive member -> its reader, giving what ``AmortizedIVF.router`` is set to (files are only
# ever read by these, never by pickle)
LOADERS = {
    MaxAffineRouter.member: MaxAffineRouter.from_bytes,
    NetworkRouter.member: load_torch_model,
    PieceGraphRouter.member: PieceGraphRouter.from_bytes,
}


def is_router(obj) -> bool:
    """Whether ``obj`` has the router protocol's methods and attributes."""
    return all(hasattr(obj, name) for name in ("dim", "num_outputs", "rank", "cost", "member"))
