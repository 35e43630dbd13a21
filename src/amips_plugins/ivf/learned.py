"""The learned parts of an amortized IVF index: the router and the query transform, how they are
fitted from training queries, and the keys grouped by list that they are fitted on."""

from __future__ import annotations

import faiss
import numpy as np

from .. import _core
from .._held_out import fingerprints
from .._io import key_fingerprint
from .._validation import as_matrix, as_num_threads, as_positive_int
from ..exact import rescore, topk_dot
from ..routing import MaxAffineRouter, NetworkRouter, PredictedKeyRouter, is_router
from ..routing.choice import choose_router
from ..routing.ledger import AnswerLedger
from ..routing.max_affine import principal_directions
from ..routing.network import is_torch_model
from .state import IVFState

__all__ = ["LEDGER_QUERIES_PER_LIST", "Learned", "list_ids_of", "stored_keys_of"]

# Training queries a fitted router keeps (with their answers) to follow changes of keys. More
# find more of the new keys that answer queries (they become pieces), at more cost per key added:
# fitted on half of the keys and given the other half, queries whose best key is new found it
# first 89.7 / 92.7 / 94.7% of the time with 64 / 128 / all 233 per list on WordNet + MiniLM
# (old: 94%), 94.6 / 95.8 / 95.5% on GloVe (old: 99%); adding cost 41 / 80 / 107 us a key on
# WordNet, 9 us on GloVe (faiss's add: 3.3 and 0.6-1.4 us).
LEDGER_QUERIES_PER_LIST = 128


class Learned(IVFState):
    """``router``, ``query_transform``, ``fit_router``, ``fit_query_transform`` and the keys they
    are fitted on (``grouped_keys``, ``list_ids``, ``keys_by_id``) of ``AmortizedIVFBase``."""

    @property
    def query_transform(self):
        return self._query_transform

    @query_transform.setter
    def query_transform(self, model) -> None:
        impl = None
        if model is not None:
            impl = PredictedKeyRouter(model, self._d, self.nlist)
            self._check_fingerprint(model, "query_transform")
        self._query_transform, self._transform_impl = model, impl
        self._stale.discard("query_transform")
        self._effort = None  # measured with the previous choice of lists

    @property
    def router(self):
        return self._router

    @router.setter
    def router(self, router) -> None:
        """A router (see ``amips_plugins.routing``: e.g. a ``MaxAffineRouter``) or a
        SupportNet / KeyNet with one output per list; None: faiss's quantizer."""
        impl = router
        if is_torch_model(router):
            impl = NetworkRouter(router)
        elif router is not None and not is_router(router):
            raise TypeError(
                f"router must be a MaxAffineRouter, a SupportNet / KeyNet or an object with the "
                f"amips_plugins.routing protocol, got {type(router)}"
            )
        if impl is not None and (impl.num_outputs != self.nlist or impl.dim != self._d):
            raise ValueError(
                f"router must have dim {self._d} and {self.nlist} outputs (one per list), "
                f"got dim {impl.dim} and {impl.num_outputs}"
            )
        if is_torch_model(router):
            self._check_fingerprint(router, "router")
        self._router, self._router_impl = router, impl
        self._ledger = None  # fit_router keeps one for the routers it fits
        self._router_queries = None  # and the fingerprints of its queries
        self._stale.discard("router")
        self._effort = None  # measured with the previous choice of lists

    def _check_fingerprint(self, model, name: str) -> None:
        """Refuse a model trained for other keys (checked when the index already holds keys)."""
        # Compressed lists cannot give the keys back: there the caller vouches for them.
        stores_keys = isinstance(self, faiss.IndexIVFFlat) or self.refines
        if stores_keys and self.ntotal and model.key_fingerprint is not None:
            expected = key_fingerprint(self.keys_by_id())
            if model.key_fingerprint != expected:
                raise ValueError(
                    f"{name} was trained for keys {model.key_fingerprint}, "
                    f"not for this index's {expected}"
                )

    def grouped_keys(self, keys=None):
        """The keys grouped by list: ``(keys (ntotal, d), offsets (nlist + 1,), ids (ntotal,))``,
        list c being rows ``offsets[c]:offsets[c + 1]``.

        ``keys``: the raw keys (ntotal, d), row i the key with id i, needed where the lists hold
        compressed codes; an IndexIVFFlat's own keys are read (the Xbox coordinate removed), and
        a re-ranking index's raw keys.
        """
        raw = None if keys is None else as_matrix(keys, "keys", dim=self._d)
        with self._lock.reading():
            return self._grouped_keys(raw)

    def list_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """The ids in every list: ``(offsets (nlist + 1,), ids (ntotal,))``, list c's being
        ``ids[offsets[c]:offsets[c + 1]]`` in the order the list holds them."""
        with self._lock.reading():
            return self._list_ids()

    def _list_ids(self) -> tuple[np.ndarray, np.ndarray]:
        return list_ids_of(self)

    def _grouped_keys(self, raw: np.ndarray | None):
        offsets, ids = self._list_ids()
        if raw is not None:
            if len(raw) != self.ntotal or (len(ids) and (ids.min() < 0 or ids.max() >= len(raw))):
                raise ValueError(
                    f"keys must hold the index's {self.ntotal} keys, row i the key with id i; "
                    f"got {len(raw)} rows for ids up to {ids.max() if len(ids) else None}"
                )
            return raw[ids], offsets, ids
        if self.refines:
            return self._raw_rows()[ids].astype(np.float32, copy=False), offsets, ids
        if not isinstance(self, faiss.IndexIVFFlat):
            raise ValueError(
                f"{type(self).__name__} holds compressed codes, which cannot give the keys back "
                "exactly: pass the raw keys (keys=..., row i the key with id i)"
            )
        return stored_keys_of(self, offsets, self._d), offsets, ids

    def keys_by_id(self, keys=None) -> np.ndarray:
        """The keys in id order, (ntotal, d): the key set models are fingerprinted on (``keys``
        as for ``grouped_keys``)."""
        grouped, _, ids = self.grouped_keys(keys)
        return grouped[np.argsort(ids, kind="stable")]

    def _fit_ledger(self, queries, keys, best, ids) -> AnswerLedger:
        """A ledger of at most ``LEDGER_QUERIES_PER_LIST`` training queries per list (a seeded
        sample) with their best key (row ``best`` of ``keys``, id ``ids[best]``) and its score
        with the query as the ledger stores it, in one direction group per list."""
        count = min(len(queries), LEDGER_QUERIES_PER_LIST * self.nlist)
        rows = np.sort(np.random.default_rng(0).choice(len(queries), count, replace=False))
        stored = AnswerLedger.stored(queries[rows])
        scores = rescore(stored, keys, best[rows, None])[:, 0]
        return AnswerLedger.build(stored, scores, ids[best[rows]], self.nlist)

    def fit_query_transform(
        self, train_queries, model=None, *, keys=None, **fit_kwargs
    ) -> list[dict]:
        """Train ``model`` (default: a residual ``KeyNet(d)``) to predict each training query's best
        key among this index's keys (``keys`` as for ``grouped_keys``), and use it.
        ``fit_kwargs`` go to ``amips_plugins.fit``; returns its history."""
        from ..learn.models import KeyNet
        from ..learn.training import fit

        self._require_keys()
        model = KeyNet(self._d) if model is None else model
        history = fit(model, self.keys_by_id(keys), train_queries, **fit_kwargs)
        self.query_transform = model
        return history

    def fit_router(
        self,
        train_queries,
        model=None,
        *,
        keys=None,
        budget: float | None = None,
        num_pieces: int | None = None,
        router_dim: int | None = None,
        num_threads: int | None = None,
        **fit_kwargs,
    ) -> list[dict] | None:
        """Learn which lists to probe from ``train_queries`` (n, d), and use it.

        By default: the router, ``probe_union`` and ``nprobe`` that find the best key's list for
        the most held-out training queries within ``budget`` FLOPs per query (None: what faiss's
        own search spends at 5% of the lists), among a ``MaxAffineRouter`` of 16 pieces per
        list (in 128 dimensions for keys of more than 256), a ``PieceGraphRouter`` over
        every training answer at a few beams, each alone or with faiss's ranking in turn, and
        faiss's ranking alone (see ``routing.choice``); returns each candidate's best row
        within the budget (``router``, ``nprobe``, ``top1``, ``flops``), best first.

        With ``num_pieces`` or ``router_dim``: that ``MaxAffineRouter`` (the list means plus
        ``num_pieces`` keys that win the most training queries, default ``16 * nlist``, scored in
        ``router_dim`` dimensions, default the keys'); returns None. With ``model`` (a
        SupportNet or KeyNet with ``nlist`` outputs): trained by ``amips_plugins.fit`` to
        regress every list's support value (``fit_kwargs`` passed on); returns the training
        history. ``keys``: the raw keys, row i the key with id i, for an index whose lists hold
        compressed codes (see ``grouped_keys``). The index keeps a fingerprint of each training
        query (8 bytes), and ``calibrate`` refuses queries that are mostly among them.
        """
        self._require_keys()
        keys, offsets, ids = self.grouped_keys(keys)
        if model is None:
            queries = as_matrix(train_queries, "train_queries", dim=self._d, allow_empty=False)
            best = topk_dot(queries, keys, 1, num_threads=as_num_threads(num_threads))[1][:, 0]
            report = None
            if num_pieces is None and router_dim is None:
                choice = choose_router(self, keys, offsets, ids, queries, best, budget, num_threads)
                self.router, self.probe_union = choice.router, choice.probe_union
                self.nprobe, report = choice.nprobe, choice.report
            else:
                pieces = 16 * self.nlist if num_pieces is None else num_pieces
                projection = None
                if router_dim is not None and as_positive_int(router_dim, "router_dim") < self._d:
                    projection = principal_directions(queries, router_dim)
                self.router = MaxAffineRouter.from_answers(
                    keys, offsets, best, pieces, projection, ids
                )
            if self._router is not None:  # keeps it true as keys come and go
                self._ledger = self._fit_ledger(queries, keys, best, ids)
                self._router_queries = fingerprints(queries)
            _core.release_free_memory()  # what fitting freed: the answers' and pieces' transients
            return report
        from ..learn.training import fit

        if model.num_outputs != self.nlist:
            raise ValueError(
                f"the router model has {model.num_outputs} outputs; "
                f"this index has {self.nlist} lists"
            )
        fit_kwargs = {
            "key_weight": 0.0,
            "score_weight": 1.0,
            "num_threads": num_threads,
            **fit_kwargs,
        }
        history = fit(model, keys, train_queries, offsets=offsets, **fit_kwargs)
        model.key_fingerprint = key_fingerprint(keys[np.argsort(ids, kind="stable")])
        self.router = model
        self._router_queries = fingerprints(as_matrix(train_queries, "train_queries", dim=self._d))
        return history


def list_ids_of(index) -> tuple[np.ndarray, np.ndarray]:
    """The ids in every list of a faiss IVF ``index``: ``(offsets (nlist + 1,), ids (ntotal,))``."""
    invlists = index.invlists
    sizes = np.array([invlists.list_size(c) for c in range(index.nlist)], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    ids = np.empty(offsets[-1], np.int64)
    for c in np.flatnonzero(sizes):
        ids[offsets[c] : offsets[c + 1]] = faiss.rev_swig_ptr(
            invlists.get_ids(int(c)), int(sizes[c])
        )
    return offsets, ids


def stored_keys_of(index, offsets: np.ndarray, dim: int) -> np.ndarray:
    """The keys a faiss IndexIVFFlat ``index`` stores, list by list as ``offsets`` (from
    ``list_ids_of``), their first ``dim`` coordinates (the Xbox one dropped): (ntotal, dim)."""
    invlists, stored = index.invlists, index.d
    sizes = np.diff(offsets)
    keys = np.empty((offsets[-1], stored), np.float32)
    for c in np.flatnonzero(sizes):
        n = int(sizes[c])
        keys[offsets[c] : offsets[c + 1]] = (
            faiss.rev_swig_ptr(invlists.get_codes(int(c)), n * stored * 4)
            .view(np.float32)
            .reshape(n, stored)
        )
    return np.ascontiguousarray(keys[:, :dim])
