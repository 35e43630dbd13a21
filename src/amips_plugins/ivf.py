"""AmortizedIVF: ``faiss.IndexIVFFlat`` whose lists are chosen by a learned model.

The search itself stays faiss's: the lists to probe are computed here and handed to
``search_preassigned``, which scans them with the original query, so the scores are faiss's own
inner products with q. Choosing the lists:

- no learned part: faiss's quantizer ranks the centroids for q (results equal faiss's own search);
- ``router`` (a :class:`MaxAffineRouter`, or a model with one output per list): lists ranked by
  the predicted support value of each list; no coarse quantizer step;
- ``query_transform`` (a one-output KeyNet, SupportNet or MaxAffineNet): the quantizer ranks the
  centroids for the predicted best key instead of q. The chosen lists are then scanned with q
  itself, which finds every key that gathering candidates with the predicted key and rescoring
  them with q would find, at the same cost;
- ``probe_union`` with a learned part: the learned ranking and faiss's ranking for q taken in turn
  (learned first, then faiss's first, then the second of each, ...), duplicates skipped, until
  nprobe lists are chosen.
"""

from __future__ import annotations

import functools
import io
import json
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faiss
import numpy as np

from . import _core
from ._io import atomic_path, key_fingerprint, read_archive
from ._sync import ReadWriteLock
from ._validation import (
    DimensionError,
    as_int64,
    as_k,
    as_key_ids,
    as_matrix,
    as_num_threads,
    as_positive_int,
    into_out,
)
from .effort import EffortTable, ScoreBins, effort_grid
from .exact import topk_dot
from .routing import (
    LOADERS,
    CentroidRouter,
    InTurn,
    MaxAffineRouter,
    NetworkRouter,
    PredictedKeyRouter,
    is_router,
)
from .routing.choice import choose_router
from .routing.network import is_torch_model, load_torch_model
from .xbox import XboxTransform

__all__ = [
    "AmortizedIVF",
    "AmortizedIVFBase",
    "AmortizedIVFPQ",
    "AmortizedIVFPQFastScan",
    "AmortizedIVFScalarQuantizer",
]

# Lists every target_recall search scans before choosing how many more a query needs (see
# calibrate): on GloVe and WordNet + MiniLM, 2 to 4 first lists saved the most keys scanned.
FIRST_LISTS = 4

_FORMAT = "amips_plugins.AmortizedIVF"  # read back by _io.read_archive
_VERSION = 1
_MEMBERS = ("index.faiss", PredictedKeyRouter.member, *LOADERS)
_MIN_QUERIES_PER_THREAD = 16  # below this, starting a thread costs more than it saves


class NotTrainedError(ValueError, RuntimeError):
    """The index must be trained first: a ValueError, and the RuntimeError faiss raises."""


_IVF = faiss.IndexIVF


class AmortizedIVFBase(faiss.IndexIVF):
    """The learned choice of lists, shared by :class:`AmortizedIVF` (``faiss.IndexIVFFlat``) and
    the classes for faiss's compressed IVF indexes (:class:`AmortizedIVFPQ`,
    :class:`AmortizedIVFScalarQuantizer`, :class:`AmortizedIVFPQFastScan` and, where faiss has
    it, ``AmortizedIVFRaBitQ``): each also derives from its faiss class, whose C++ object it is.
    Make one with :meth:`from_faiss`, :meth:`from_factory` or :meth:`load`.

    Compressed lists cannot give the keys back exactly, so the learned parts are fitted from the
    raw keys the caller passes (``fit_router(train_queries, keys=...)``, row i the key with id i);
    the index's own codes are read only for IndexIVFFlat.
    """

    # faiss refuses attributes its classes do not have; these are this class's own.
    _d = 0  # the key dimension (faiss's d is one more with xbox)
    xbox: XboxTransform | None = None
    probe_union: bool | None = None
    last_search_stats: dict = {}
    _lock: Any = None
    _query_transform: Any = None
    _router: Any = None
    # the routing protocol's objects for router and query_transform (amips_plugins.routing)
    _router_impl: Any = None
    _transform_impl: Any = None
    _centroids: Any = None  # the quantizer's centroids, read at the first search after training
    _effort: EffortTable | None = None  # calibrate()'s, for target_recall; None: not calibrated

    def _init_learned(self, d, xbox, query_transform, router, probe_union):
        self._d, self.xbox = d, xbox
        # Searches read the lists while add / reset change them: faiss does not order the two.
        self._lock = ReadWriteLock()
        self.last_search_stats = {}  # replaced whole by each search
        self.query_transform, self.router = query_transform, router
        self.probe_union = probe_union

    @staticmethod
    def _adopt(index, owner=None) -> AmortizedIVFBase:
        """An instance of the class for ``index``'s faiss class over its C++ object (shared, not
        copied); ``owner``: the proxy that frees that object, kept alive (default ``index``)."""
        amortized = _AMORTIZED[type(index)]
        self = amortized.__new__(amortized)
        self.this = index.this
        self.referenced_objects = [index if owner is None else owner]
        return self

    @classmethod
    def from_faiss(
        cls, index, *, query_transform=None, router=None, probe_union: bool | None = None
    ) -> AmortizedIVFBase:
        """Wrap an existing inner-product faiss IVF index (shared, not copied): an IndexIVFFlat
        gives an :class:`AmortizedIVF`, an IndexIVFPQ an :class:`AmortizedIVFPQ`, and so on for
        every faiss IVF class listed in the README."""
        plain: Any = faiss.downcast_index(index) if isinstance(index, faiss.Index) else None
        if type(plain) not in _AMORTIZED or plain.metric_type != faiss.METRIC_INNER_PRODUCT:
            names = ", ".join(c.__name__ for c in _AMORTIZED)
            raise TypeError(
                f"from_faiss needs an inner-product faiss IVF index ({names}), got {index!r:.100}"
            )
        self = AmortizedIVFBase._adopt(plain, owner=index)
        self._init_learned(plain.d, None, query_transform, router, probe_union)
        return self

    @classmethod
    def from_factory(cls, d: int, description: str, **learned) -> AmortizedIVFBase:
        """``faiss.index_factory(d, description, faiss.METRIC_INNER_PRODUCT)`` with a learned
        part, for an IVF description such as ``"IVF1024,PQ32x8"``, ``"IVF1024,SQ8"``,
        ``"IVF1024,PQ32x4fs"`` or ``"IVF1024,Flat"``; ``learned`` as for :meth:`from_faiss`."""
        d = as_positive_int(d, "d")
        try:
            index = faiss.index_factory(d, description, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            message = str(e).strip().splitlines()[-1]
            raise ValueError(f"faiss cannot build {description!r}: {message}") from None
        return cls.from_faiss(index, **learned)

    @property
    def nprobe(self) -> int:
        return _IVF.nprobe.__get__(self)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        _IVF.nprobe.__set__(self, as_positive_int(value, "nprobe"))

    # --- learned parts ------------------------------------------------------------------------
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
        self._effort = None  # measured with the previous choice of lists

    @property
    def router(self):
        return self._router

    @router.setter
    def router(self, router) -> None:
        """A router (see :mod:`amips_plugins.routing`: e.g. a :class:`MaxAffineRouter`) or a
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
        self._effort = None  # measured with the previous choice of lists

    def _check_fingerprint(self, model, name: str) -> None:
        """Refuse a model trained for other keys (checked when the index already holds keys)."""
        # Compressed lists cannot give the keys back: there the caller vouches for them.
        stores_keys = isinstance(self, faiss.IndexIVFFlat)
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
        compressed codes; an IndexIVFFlat's own keys are read (the Xbox coordinate removed).
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
        invlists = self.invlists
        sizes = np.array([invlists.list_size(c) for c in range(self.nlist)], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        ids = np.empty(offsets[-1], np.int64)
        for c in np.flatnonzero(sizes):
            ids[offsets[c] : offsets[c + 1]] = faiss.rev_swig_ptr(
                invlists.get_ids(int(c)), int(sizes[c])
            )
        return offsets, ids

    def _grouped_keys(self, raw: np.ndarray | None):
        invlists, dim = self.invlists, self.d
        offsets, ids = self._list_ids()
        sizes = np.diff(offsets)
        if raw is not None:
            if len(raw) != self.ntotal or (len(ids) and (ids.min() < 0 or ids.max() >= len(raw))):
                raise ValueError(
                    f"keys must hold the index's {self.ntotal} keys, row i the key with id i; "
                    f"got {len(raw)} rows for ids up to {ids.max() if len(ids) else None}"
                )
            return raw[ids], offsets, ids
        if not isinstance(self, faiss.IndexIVFFlat):
            raise ValueError(
                f"{type(self).__name__} holds compressed codes, which cannot give the keys back "
                "exactly: pass the raw keys (keys=..., row i the key with id i)"
            )
        keys = np.empty((offsets[-1], dim), np.float32)
        for c in np.flatnonzero(sizes):
            n = int(sizes[c])
            keys[offsets[c] : offsets[c + 1]] = (
                faiss.rev_swig_ptr(invlists.get_codes(int(c)), n * dim * 4)
                .view(np.float32)
                .reshape(n, dim)
            )
        return np.ascontiguousarray(keys[:, : self._d]), offsets, ids

    def keys_by_id(self, keys=None) -> np.ndarray:
        """The keys in id order, (ntotal, d): the key set models are fingerprinted on (``keys``
        as for :meth:`grouped_keys`)."""
        grouped, _, ids = self.grouped_keys(keys)
        return grouped[np.argsort(ids, kind="stable")]

    def fit_query_transform(
        self, train_queries, model=None, *, keys=None, **fit_kwargs
    ) -> list[dict]:
        """Train ``model`` (default: a residual ``KeyNet(d)``) to predict each training query's best
        key among this index's keys (``keys`` as for :meth:`grouped_keys`), and use it.
        ``fit_kwargs`` go to :func:`amips_plugins.fit`; returns its history."""
        from .learn.models import KeyNet
        from .learn.training import fit

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
        own search spends at 5% of the lists), among a :class:`MaxAffineRouter` of 16 pieces per
        list (in 128 dimensions for keys of more than 256), a :class:`PieceGraphRouter` over
        every training answer at a few beams, each alone or with faiss's ranking in turn, and
        faiss's ranking alone (see :mod:`.routing.choice`); returns each candidate's best row
        within the budget (``router``, ``nprobe``, ``top1``, ``flops``), best first.

        With ``num_pieces`` or ``router_dim``: that :class:`MaxAffineRouter` (the list means plus
        ``num_pieces`` keys that win the most training queries, default ``16 * nlist``, scored in
        ``router_dim`` dimensions, default the keys'); returns None. With ``model`` (a
        SupportNet or KeyNet with ``nlist`` outputs): trained by :func:`amips_plugins.fit` to
        regress every list's support value (``fit_kwargs`` passed on); returns the training
        history. ``keys``: the raw keys, row i the key with id i, for an index whose lists hold
        compressed codes (see :meth:`grouped_keys`).
        """
        self._require_keys()
        keys, offsets, ids = self.grouped_keys(keys)
        if model is None and num_pieces is None and router_dim is None:
            queries = as_matrix(train_queries, "train_queries", dim=self._d, allow_empty=False)
            choice = choose_router(self, keys, offsets, queries, budget, num_threads)
            self.router, self.probe_union = choice.router, choice.probe_union
            self.nprobe = choice.nprobe
            return choice.report
        if model is None:
            pieces = 16 * self.nlist if num_pieces is None else num_pieces
            self.router = MaxAffineRouter.fit(
                keys, offsets, train_queries, pieces, dim=router_dim, num_threads=num_threads
            )
            return None
        from .learn.training import fit

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
        return history

    def calibrate(
        self, queries, k: int = 10, *, keys=None, max_nprobe: int | None = None
    ) -> np.ndarray:
        """Measure how many lists queries like ``queries`` (n, d) need, query by query: the
        recall@k of this index's choice of lists at nprobe up to ``max_nprobe`` (default nlist),
        against the exact top-k (``keys`` as for :meth:`grouped_keys`). The queries are grouped
        by the k-th best score (over |q|) in their first :data:`FIRST_LISTS` lists.

        Then ``search(x, k, target_recall=r)`` scans each query's first lists, finds its group
        from what they hold, and scans as many more as that group needs, so that the mean
        recall@k over queries like these is r at the fewest keys scanned (never fewer than the
        first lists).

        Use held-out queries, not those the router was fitted on: the router finds its own
        training queries' answers more often, and the targets would be missed. Changing the
        router or the query transform clears the calibration. A key counts as found when its
        list is probed (the scan is exact; ``max_codes`` is not modelled). Returns the mean
        recall@k at nprobe 1 .. max_nprobe, (max_nprobe,) float64.
        """
        q = as_matrix(queries, "queries", dim=self._d, allow_empty=False)
        self._require_keys()
        k = as_k(k, self.ntotal, len(q))
        depth = (
            self.nlist
            if max_nprobe is None
            else min(as_positive_int(max_nprobe, "max_nprobe"), self.nlist)
        )
        grouped, offsets, _ = self.grouped_keys(keys)
        _, rows = topk_dot(q, grouped, k)
        true_lists = np.searchsorted(offsets, rows, side="right") - 1  # (n, k)
        lists = self.probed_lists(q, params=faiss.SearchParametersIVF(nprobe=depth))
        found_at = np.empty(true_lists.shape, np.int64)  # the probe reaching each key; depth: none
        for a in range(0, len(q), 1024):  # (chunk, depth, k) comparisons at a time
            hit = lists[a : a + 1024, :, None] == true_lists[a : a + 1024, None, :]
            found_at[a : a + 1024] = np.where(hit.any(axis=1), hit.argmax(axis=1), depth)
        first = min(FIRST_LISTS, depth)
        efforts = effort_grid(first, depth, ratio=1.1)
        recall = np.stack([(found_at < n).mean(axis=1) for n in efforts], axis=1)
        sizes = np.diff(offsets)
        scanned = np.cumsum(np.where(lists >= 0, sizes[np.maximum(lists, 0)], 0), axis=1)
        with self._lock.reading():
            scores = self._scan(
                q, k, np.ascontiguousarray(lists[:, :first]), _default_scan_params(first, 0)
            )[0]
        bins, group = ScoreBins.fit(_kth_score_over_norm(scores, q))
        # cost: keys scanned, plus one so that it is positive where the first lists are empty
        table = EffortTable.from_queries(
            k, efforts, bins, group, recall, 1 + scanned[:, efforts - 1]
        )
        self._effort = table
        return np.bincount(found_at.ravel(), minlength=depth + 1)[:depth].cumsum() / rows.size

    def _calibration(self, k: int) -> EffortTable:
        table = self._effort
        if table is None:
            raise ValueError(
                "target_recall needs a calibration: call calibrate(held_out_queries, k) first "
                "(after fitting the router)"
            )
        if k != table.k:
            raise ValueError(f"the index was calibrated for k = {table.k}, not {k}")
        return table

    def _require_keys(self) -> None:
        if self.ntotal == 0:
            raise ValueError("add keys to the index before training its learned parts")

    # --- faiss's methods ----------------------------------------------------------------------
    def _require_trained(self) -> None:
        if not self.is_trained:
            raise NotTrainedError("train the index first (faiss's train)")

    def _stored(self, x: np.ndarray) -> np.ndarray:
        """Validated keys as the faiss index stores them (augmented with ``xbox``)."""
        self._require_trained()
        return self.xbox.add_keys(x) if self.xbox is not None else x

    def train(self, x) -> None:
        """Cluster ``x`` (n >= nlist, d) into the lists (with ``xbox``: augmented by their own
        max norm)."""
        x = as_matrix(x, "x", dim=self._d, allow_empty=False)
        if len(x) < self.nlist:
            raise ValueError(f"training needs at least nlist = {self.nlist} vectors, got {len(x)}")
        if self.xbox is not None:
            x = XboxTransform(self._d).add_keys(x)
        with self._lock.writing():
            self.train_c(len(x), faiss.swig_ptr(x))
            self._centroids = None

    def add(self, x) -> None:
        """Add keys ``x`` (n, d) with ids ntotal .. ntotal + n - 1."""
        x = as_matrix(x, "x", dim=self._d)
        with self._lock.writing():
            stored = self._stored(x)
            self.add_c(len(stored), faiss.swig_ptr(stored))

    def add_with_ids(self, x, ids) -> None:
        """Add keys ``x`` (n, d) with the ``ids`` (n,): integers in 0 .. 2**63 - 1 (-1 is the
        padding searches return, so no key may have it)."""
        x = as_matrix(x, "x", dim=self._d)
        ids = as_key_ids(ids, len(x))
        with self._lock.writing():
            stored = self._stored(x)
            self.add_with_ids_c(len(stored), faiss.swig_ptr(stored), faiss.swig_ptr(ids))

    def reset(self) -> None:
        """Remove every key (the lists' centroids and the learned parts stay)."""
        with self._lock.writing():
            _IVF.reset(self)
            if self.xbox is not None:
                self.xbox = XboxTransform(self._d)

    def remove_ids(self, sel) -> int:
        """faiss's ``remove_ids`` (an IDSelector or an array of ids), ordered against searches."""
        with self._lock.writing():
            return _IVF.remove_ids(self, sel)

    def merge_from(self, other, add_id: int = 0) -> None:
        """faiss's ``merge_from``, ordered against searches (not with ``xbox``: the other index's
        keys were augmented for another max norm)."""
        if self.xbox is not None:
            raise ValueError("merge_from is not supported with xbox")
        with self._lock.writing():
            _IVF.merge_from(self, other, add_id)

    def search(self, x, k: int, *, params=None, target_recall=None, D=None, I=None):
        """Top-k keys of every query of ``x`` (n, d) by inner product, in the probed lists.

        ``params`` (a ``faiss.SearchParametersIVF``) sets nprobe, ``max_codes`` and the id
        selector ``sel`` for this call; ``target_recall`` (after :meth:`calibrate`) sets every
        query's nprobe from the k-th best score in its first lists, so that the mean recall@k
        over queries like the calibration ones meets it (``last_search_stats["nprobe_per_query"]``).
        Returns ``(D, I)``: float32 (n, k) inner products best first and int64 (n, k) ids,
        padded as faiss pads (-FLT_MAX / -1) where the lists hold fewer than k keys; written
        into ``D`` / ``I`` when given, as in faiss.
        """
        q = as_matrix(x, "x", dim=self._d)
        _check_params(params)
        with self._lock.reading():
            k = as_k(k, self.ntotal, len(q), pad=True)
            if target_recall is None:
                scores, ids = self._search(q, k, params)
            else:
                scores, ids = self._search_to_target(q, k, target_recall, params)
        return into_out(D, scores, "D"), into_out(I, ids, "I")

    def _search(self, q: np.ndarray, k: int, params):
        start = time.perf_counter()
        lists, nprobe, network_flops, coarse_distances = self._route(q, params)
        routed = time.perf_counter()
        D, I, distances = self._scan(q, k, lists, _scan_params(params, nprobe, self.max_codes))
        self._record_stats(
            q, lists, nprobe, distances, network_flops, coarse_distances, (start, routed)
        )
        return D, I

    def _search_to_target(self, q: np.ndarray, k: int, target_recall, params):
        """The calibrated search: each query's first lists, then its group's further ones."""
        table = self._calibration(k)
        chosen = table.efforts_for(target_recall)  # nprobe per group
        start = time.perf_counter()
        deepest = int(chosen.max())
        lists, _, network_flops, coarse = self._route(q, _scan_params(params, deepest, 0))
        routed = time.perf_counter()
        first = int(table.efforts[0])
        D, I, distances = self._scan(
            q,
            k,
            np.ascontiguousarray(lists[:, :first]),
            _scan_params(params, first, self.max_codes),
        )
        nprobe = chosen[table.group_of(_kth_score_over_norm(D, q))]
        # each query its own lists; none scanned past the deepest these queries need
        reach = int(nprobe.max()) if len(q) else first
        lists = np.where(np.arange(reach)[None, :] < nprobe[:, None], lists[:, :reach], -1)
        if reach > first:
            rest = np.ascontiguousarray(lists[:, first:])
            D2, I2, distances2 = self._scan(
                q, k, rest, _scan_params(params, reach - first, self.max_codes)
            )
            D, I = _merge_top_k(D, I, D2, I2)
            distances += distances2
        self._record_stats(
            q, lists, nprobe.mean(), distances, network_flops, coarse, (start, routed)
        )
        self.last_search_stats["nprobe_per_query"] = nprobe
        return D, I

    def _record_stats(self, q, lists, nprobe, distances, network_flops, coarse_distances, times):
        """``last_search_stats`` of a search: ``times`` (its start, the end of its routing)."""
        start, routed = times
        end = time.perf_counter()
        n = max(len(q), 1)
        self.last_search_stats = {
            "queries": len(q),
            "nprobe": nprobe,
            "lists_probed": int(np.count_nonzero(lists >= 0)) / n,
            "distances": distances / n + coarse_distances,
            "flops": 2 * (distances / n + coarse_distances) * self.d + network_flops,
            "network_flops": network_flops,
            "routing_s": routed - start,
            "scan_s": end - routed,
        }

    def _route(self, q: np.ndarray, params):
        """(lists (n, nprobe) int64, nprobe, network FLOPs and coarse distances per query)."""
        self._require_trained()
        nprobe = min(self.nprobe if params is None else params.nprobe, self.nlist)
        if nprobe < 1:
            raise ValueError(f"nprobe must be positive, got {nprobe}")
        router = self._search_router()
        lists = np.ascontiguousarray(router.rank(q, nprobe, self, params), dtype=np.int64)
        return (lists, nprobe, *router.cost(self, nprobe))

    def probed_lists(self, x, *, params=None) -> np.ndarray:
        """The lists :meth:`search` probes for each query of ``x`` (n, d): (n, nprobe) int64,
        best first, -1 where fewer exist (``params`` as for :meth:`search`)."""
        q = as_matrix(x, "x", dim=self._d)
        _check_params(params)
        with self._lock.reading():
            return self._route(q, params)[0]

    def search_lists(self, x, k: int, lists, *, params=None):
        """Top-k keys of every query of ``x`` (n, d) in the lists given for it, ``lists`` (n, m)
        int64 (-1: none): :meth:`search` with the choice of lists left to the caller (faiss's
        ``search_preassigned``). Returns ``(D, I)`` as :meth:`search` does; the scan's counts go
        to ``last_search_stats``."""
        q = as_matrix(x, "x", dim=self._d)
        chosen = as_int64(lists, "lists", ndim=2)
        _check_params(params)
        if len(chosen) != len(q):
            raise ValueError(f"lists has {len(chosen)} rows for {len(q)} queries")
        if chosen.size and (chosen.min() < -1 or chosen.max() >= self.nlist):
            raise ValueError(f"lists must lie in -1 .. {self.nlist - 1}")
        with self._lock.reading():
            self._require_trained()
            k = as_k(k, self.ntotal, len(q), pad=True)
            start = time.perf_counter()
            scan_params = _scan_params(params, chosen.shape[1], self.max_codes)
            D, I, distances = self._scan(q, k, chosen, scan_params)
        self.last_search_stats = {
            "queries": len(q),
            "lists_probed": int(np.count_nonzero(chosen >= 0)) / max(len(q), 1),
            "distances": distances / max(len(q), 1),
            "scan_s": time.perf_counter() - start,
        }
        return D, I

    def _search_router(self):
        """The router a search uses: the learned one (the router before the query transform),
        taken in turn with faiss's ranking under ``probe_union``, else faiss's alone."""
        centroids = CentroidRouter(self._d, self.nlist)
        learned = self._router_impl or self._transform_impl
        if learned is None:
            return centroids
        union = self.probe_union
        if union is None:  # the default: measured best with the max-affine router only
            union = isinstance(self._router, MaxAffineRouter)
        return InTurn(learned, centroids) if union else learned

    def _scan(self, q: np.ndarray, k: int, lists: np.ndarray, params):
        """faiss's scan of the given lists (n, nprobe) for the queries ``q`` (with ``xbox``, their
        augmented form): (D, I, distances computed).

        ``search_preassigned`` runs on one thread (faiss's own ``search`` parallelises above it),
        so the queries are split over faiss's OpenMP thread count here; faiss releases the GIL.
        Its counters are added to ``faiss.cvar.indexIVF_stats``, as faiss's search does.
        """
        queries = self.xbox.transform_queries(q) if self.xbox is not None else q
        n = len(lists)
        D = np.empty((n, k), np.float32)
        I = np.empty((n, k), np.int64)
        centroid_scores = self._centroid_scores(queries, lists)
        counted = not isinstance(self, faiss.IndexIVFFastScan)  # fast-scan refuses the counters

        def scan(rows: slice):
            stats = faiss.IndexIVFStats() if counted else None
            self.search_preassigned_c(
                rows.stop - rows.start,
                faiss.swig_ptr(queries[rows]),
                k,
                faiss.swig_ptr(lists[rows]),
                faiss.swig_ptr(centroid_scores[rows]),
                faiss.swig_ptr(D[rows]),
                faiss.swig_ptr(I[rows]),
                False,
                params,
                stats,
            )
            return stats

        threads = min(faiss.omp_get_max_threads(), n // _MIN_QUERIES_PER_THREAD)
        if threads <= 1:
            parts = [scan(slice(0, n))]
        else:
            bounds = np.linspace(0, n, threads + 1).astype(int).tolist()
            with ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(scan, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))
        if not counted:
            probed, times = np.unique(lists[lists >= 0], return_counts=True)
            sizes = [self.invlists.list_size(int(c)) for c in probed]
            return D, I, int(np.dot(sizes, times))
        for stats in parts:
            faiss.cvar.indexIVF_stats.add(stats)
        return D, I, sum(stats.ndis for stats in parts)

    def _centroid_scores(self, queries: np.ndarray, lists: np.ndarray) -> np.ndarray:
        """q . centroid of every probed list: residual codes (PQ, SQ, RaBitQ) add it to their
        scores, as in faiss's own search; IndexIVFFlat ignores it."""
        if isinstance(self, faiss.IndexIVFFlat):
            return np.zeros(lists.shape, np.float32)
        if self._centroids is None:  # cleared by train
            rows = self.quantizer.reconstruct_n(0, self.nlist)
            self._centroids = as_matrix(rows, "the quantizer's centroids", dim=self.d)
        # both already checked: the core's rescore without exact.rescore's second check
        return _core.rescore(queries, self._centroids, lists, as_num_threads(None))

    # --- persistence --------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the faiss index, the Xbox state, the learned parts and the config to one file
        (a zip archive), atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            self._write_archive(f)

    def serialize(self) -> bytes:
        """What :meth:`save` writes, as bytes (:meth:`deserialize` reads them back)."""
        buf = io.BytesIO()
        self._write_archive(buf)
        return buf.getvalue()

    def _write_archive(self, file) -> None:
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "d": self._d,
            "nprobe": self.nprobe,
            "xbox": None if self.xbox is None else self.xbox.state_dict(),
            "router": None if self._router is None else type(self._router).__name__,
            "probe_union": self.probe_union,
            "calibration": None if self._effort is None else self._effort.state_dict(),
        }
        if self._router_impl is not None and self._router_impl.member not in LOADERS:
            raise ValueError(
                f"{type(self._router).__name__} cannot be saved: amips_plugins.routing.LOADERS "
                f"has no reader for its member {self._router_impl.member!r}"
            )
        with self._lock.reading():
            serialized = faiss.serialize_index(self).tobytes()
        with zipfile.ZipFile(file, "w") as z:
            z.writestr("meta.json", json.dumps(meta))
            z.writestr("index.faiss", serialized)
            for impl in (self._transform_impl, self._router_impl):
                if impl is not None:
                    z.writestr(impl.member, impl.to_bytes())

    @classmethod
    def load(cls, path) -> AmortizedIVFBase:
        """Read an index written by :meth:`save`; a foreign, corrupt, inconsistent or newer file:
        ValueError. Sizes are checked before anything is allocated for them."""
        return cls._read(path, str(path))

    @classmethod
    def deserialize(cls, data) -> AmortizedIVFBase:
        """The index :meth:`serialize` gave as ``data`` (bytes); errors as for :meth:`load`."""
        return cls._read(bytes(data), "the data")

    @classmethod
    def _read(cls, source, name: str) -> AmortizedIVFBase:
        try:
            meta, blobs = read_archive(source, "AmortizedIVF", _VERSION, _MEMBERS)
            index = faiss.deserialize_index(np.frombuffer(blobs["index.faiss"], np.uint8))
        except (
            OSError,
            zipfile.BadZipFile,
            KeyError,
            json.JSONDecodeError,
            UnicodeDecodeError,
            RuntimeError,
        ) as e:
            raise ValueError(
                f"{name} is not a readable AmortizedIVF file ({type(e).__name__}: {e})"
            ) from None
        try:
            d = _check_payload(meta, index)
            self = AmortizedIVFBase._adopt(index)
            xbox = meta["xbox"]
            xbox = None if xbox is None else XboxTransform.from_state_dict(xbox)
            if (xbox is not None) != (index.d == d + 1):
                raise ValueError(
                    f"the faiss index has dimension {index.d} and the Xbox state is "
                    f"{'absent' if xbox is None else 'present'}, for d = {d}"
                )
            if xbox is not None and xbox.dim != d:
                raise ValueError(f"the Xbox state has dim {xbox.dim}, the index {d}")
            self.nprobe = meta["nprobe"]
            union = meta.get("probe_union")
            if not (union is None or isinstance(union, bool)):
                raise ValueError(f"probe_union must be true, false or null, got {union!r}")
            router = next((LOADERS[m](blobs[m]) for m in LOADERS if m in blobs), None)
            query_transform = blobs.get(PredictedKeyRouter.member)
            self._init_learned(
                d,
                xbox,
                None if query_transform is None else load_torch_model(query_transform),
                router,
                union,
            )
            calibration = meta.get("calibration")
            if calibration is not None:
                self._effort = _check_calibration(calibration, index)
        except (KeyError, TypeError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{name} is an inconsistent AmortizedIVF file: {e}") from None
        return self

    # pickle and copy.deepcopy keep the learned parts (faiss's own pickling keeps the lists only)
    def __getstate__(self) -> dict:
        return {"archive": self.serialize()}

    def __setstate__(self, state: dict) -> None:
        loaded = AmortizedIVFBase.deserialize(state["archive"])
        for name, value in vars(loaded).items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        parts = [
            f"d={self._d}",
            f"nlist={self.nlist}",
            f"ntotal={self.ntotal}",
            f"nprobe={self.nprobe}",
        ]
        if self.xbox is not None:
            parts.append("xbox")
        if self._router is not None:
            parts.append(f"router={type(self._router).__name__}")
        if self._query_transform is not None:
            parts.append(f"query_transform={type(self._query_transform).__name__}")
        if self.probe_union is not None:
            parts.append(f"probe_union={self.probe_union}")
        return f"{type(self).__name__}({', '.join(parts)})"


class AmortizedIVF(AmortizedIVFBase, faiss.IndexIVFFlat):
    """``faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)`` whose lists are
    chosen by a learned model: a subclass of faiss's own class.

    Parameters
    ----------
    quantizer : faiss index or None
        The coarse quantizer, as for faiss (dimension d, or d + 1 with ``xbox``); None creates
        ``IndexFlatIP(d)`` (``IndexFlatL2(d + 1)`` with ``xbox``).
    d, nlist : dimension of keys and queries, number of inverted lists
    metric : only ``faiss.METRIC_INNER_PRODUCT``
    xbox : cluster the Xbox-augmented keys [x, sqrt(M^2 - |x|^2)] under L2 (queries [q, 0]); the
        lists are still scanned by inner product, so scores stay q . x
    query_transform : one-output model predicting the best key (see :meth:`fit_query_transform`)
    router : :class:`MaxAffineRouter`, a model with ``nlist`` outputs (see :meth:`fit_router`), or
        any object with the router protocol of :mod:`amips_plugins.routing`
    probe_union : probe lists from the learned ranking and faiss's ranking for q in turn (pays
        the coarse step as well as the network); no effect without a learned part. None (the
        default): on with a max-affine router, where it measured best on GloVe and WordNet, off
        otherwise (with the SupportNet router on WordNet it cost a point).

    Every faiss attribute and method is faiss's own (``nprobe``, ``max_codes``, ``quantizer``,
    ``invlists``, ``reconstruct``, ``range_search``, ``remove_ids``, ...), and faiss's functions
    and containers take the object as the IndexIVFFlat it is. The learned part applies where
    Python calls :meth:`search`; ``search(x, k, params=faiss.SearchParametersIVF(nprobe=8))``
    sets nprobe (and ``max_codes``, ``sel``) for one call, safely beside other threads.

    What C++ sees is the plain IndexIVFFlat: ``faiss.write_index`` / ``serialize_index`` /
    ``clone_index``, and containers such as ``IndexShards`` / ``IndexReplicas`` /
    ``IndexPreTransform``, search it with faiss's quantizer and store no learned part. To keep
    the learned part use :meth:`save` / :meth:`load`, ``pickle`` or ``copy.deepcopy``.
    With ``xbox`` the faiss index holds the augmented keys, so ``d`` (faiss's) is the key
    dimension + 1 and faiss's own methods take and return augmented vectors; :meth:`train`,
    :meth:`add` and :meth:`search` take vectors of the key dimension.

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


# the faiss class of an index -> the class that adds the learned part to it
_AMORTIZED: dict[type, Any] = {
    faiss.IndexIVFFlat: AmortizedIVF,
    faiss.IndexIVFPQ: AmortizedIVFPQ,
    faiss.IndexIVFScalarQuantizer: AmortizedIVFScalarQuantizer,
    faiss.IndexIVFPQFastScan: AmortizedIVFPQFastScan,
}
if hasattr(faiss, "IndexIVFRaBitQ"):  # faiss >= 1.11

    class AmortizedIVFRaBitQ(AmortizedIVFBase, faiss.IndexIVFRaBitQ):
        """``faiss.IndexIVFRaBitQ`` (inner product) whose lists are chosen by a learned model."""

    _AMORTIZED[faiss.IndexIVFRaBitQ] = AmortizedIVFRaBitQ
    __all__.append("AmortizedIVFRaBitQ")


def _check_payload(meta: dict, index) -> int:
    """The key dimension that ``meta`` states, checked against the faiss ``index`` it came with."""
    if type(index) not in _AMORTIZED:
        raise ValueError(f"the payload is a {type(index).__name__}, not a faiss IVF index")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError("the payload's faiss index does not use the inner-product metric")
    d = as_positive_int(meta["d"], "d")
    xbox_dims = (d, d + 1) if isinstance(index, faiss.IndexIVFFlat) else (d,)
    if index.d not in xbox_dims:
        raise ValueError(f"meta.json says d = {d}, the faiss index has dimension {index.d}")
    return d


def _check_calibration(calibration: dict, index) -> EffortTable:
    """The effort table a file's ``calibration`` states, checked against the faiss ``index``."""
    if "edges" not in calibration:  # files before per-query nprobe: one curve for all queries
        curve = np.asarray(calibration["recall"], dtype=np.float64)
        if curve.ndim != 1:
            raise ValueError("the calibration's recall must be a list of numbers")
        efforts = np.arange(1, len(curve) + 1)
        table = EffortTable(calibration["k"], efforts, ScoreBins([]), [1.0], [curve], efforts)
    else:
        table = EffortTable.from_state_dict(calibration, index.d)
    if table.efforts[-1] > index.nlist:
        raise ValueError(f"the calibration reaches nprobe {table.efforts[-1]} of {index.nlist}")
    return table


def _kth_score_over_norm(scores: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Each query's k-th best inner product found (n,) over its norm: a query whose first lists
    already hold high scores for its length has little left to find."""
    return scores[:, -1] / np.maximum(np.linalg.norm(q, axis=1), 1e-30)


def _merge_top_k(D1, I1, D2, I2):
    """The best k of two searches' (D, I) (n, k) each, best first, padding (-1 ids) last."""
    D, I = np.concatenate([D1, D2], axis=1), np.concatenate([I1, I2], axis=1)
    order = np.argsort(np.where(I >= 0, -D, np.inf), axis=1, kind="stable")[:, : D1.shape[1]]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


_IVF_PARAMS = [
    name
    for name in dir(faiss.SearchParametersIVF)
    if isinstance(getattr(faiss.SearchParametersIVF, name), property) and name != "thisown"
]


def _check_params(params) -> None:
    if params is not None and not isinstance(params, faiss.SearchParametersIVF):
        raise TypeError(f"params must be a faiss.SearchParametersIVF, got {params!r:.100}")


def _scan_params(params, nprobe: int, max_codes: int):
    """A copy of the caller's ``SearchParametersIVF`` (never changed: other threads may share it)
    with the lists' count set; without one, the index's own ``max_codes``, as faiss does."""
    if params is None:
        return _default_scan_params(nprobe, max_codes)
    scan = faiss.SearchParametersIVF()
    for name in _IVF_PARAMS:
        setattr(scan, name, getattr(params, name))
    scan.nprobe = nprobe
    return scan


@functools.lru_cache(maxsize=64)
def _default_scan_params(nprobe: int, max_codes: int):
    """Parameters for a search without the caller's: faiss only reads them, so one object serves
    every search (and thread) with these values."""
    scan = faiss.SearchParametersIVF()
    scan.nprobe, scan.max_codes = nprobe, max_codes
    return scan
