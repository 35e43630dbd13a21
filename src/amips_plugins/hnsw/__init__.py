"""AmortizedHNSW: an ``hnswlib.Index(space="ip")`` drop-in with a choice of construction space,
norm-ordered insertion and an optional learned query transform.

The graph is hnswlib's (its insertion, heuristic, update and deletion, and its file format,
which hnswlib reads and writes) held once on the C++ core (``_core.GraphSearch``): every key
once in float32 and once in an 8-bit code, and the links. Every search walks it by the codes and
ranks what the beam keeps by exact inner products; ``.index`` makes an ``hnswlib.Index`` of
it, a copy, for code that needs hnswlib's own object.

Construction spaces (the graph is always searched by inner product, so distances are hnswlib's
``1 - q . x`` on the original vectors):

- ``"ip"``: the raw keys, as ``hnswlib.Index(space="ip")`` builds them;
- ``"xbox"``: the Xbox-augmented keys [x, sqrt(M^2 - |x|^2)], M the largest norm so far (grown
  batch by batch). All augmented keys share the norm M, so hnswlib's inner-product distance
  between them orders neighbours exactly as L2 does, and a query [q, 0] still scores q . x.

hnswlib's heuristic keeps few of the links a list has room for (on level 0, 10.4 of 32 on
GloVe, 11.7 on WordNet + MiniLM at M 16); with ``fill_lists`` (the default) the best candidates
it passed over fill the rest, as the HNSW paper's ``keepPrunedConnections`` does, and a new
element takes 2 M links on level 0 where hnswlib takes M. The memory is the same, and so is the
file, which hnswlib reads. Walked at the same ef, the denser graph scores about as many codes and
finds more: on GloVe, recall@10 0.99 needs 3.4k codes scored per query instead of 6.1k.
``fill_lists=False`` builds hnswlib's links.

``add_items`` inserts every batch in descending norm order by default: large-norm keys are the
answers of most queries, and linking them first builds a better graph (Vespa saw the same), so a
batch arriving in random order gives the graph a sorted bulk load gives.

With a ``query_transform`` (a one-output KeyNet, SupportNet or MaxAffineNet), the graph is
searched with the predicted best key, ``candidates`` results are gathered and rescored exactly
with q on the C++ core, and the top k returned.

``fit_edges(train_queries)`` links, on level 0, the keys that answer the same training query,
in the slots hnswlib's lists leave free or in place of links that only filled them (see
``amips_plugins.hnsw.edges``).

``calibrate`` measures the ef that held-out queries need, by group of query directions (see
``amips_plugins.effort``); then ``knn_query(..., target_recall=r)`` searches every query at
its group's ef.

One module per concern: ``index`` (the hnswlib-facing class: building, adding, searching,
deleting), ``settings`` (hnswlib's settings and read-only views), ``transform`` (the
query transform), ``edges`` (links learned from queries), ``calibration`` (``target_recall``
and the C++ walk), ``files`` (save, load, pickling, ``.index``), ``labels`` (element and
label) and ``state`` (what they share).
"""

from .index import AmortizedHNSW
from .state import CONSTRUCTIONS, HNSWError

__all__ = ["CONSTRUCTIONS", "AmortizedHNSW", "HNSWError"]
