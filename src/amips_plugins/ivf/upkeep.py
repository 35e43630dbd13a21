"""Keeping the learned parts of an amortized IVF index true as its keys change.

Every change of keys made through the index comes here: ``add`` / ``add_with_ids`` (the lists of
new keys are assigned here, once, and handed to faiss), ``remove_ids``, ``reset`` and
``merge_from``. A router fitted by ``fit_router`` (max-affine or piece graph) keeps a ledger of
training queries and their answers (``routing.ledger``): new keys that now answer some of them
become pieces of their lists, removed keys stop being pieces, and the queries they answered get
new answers (found among the stored keys, or, where the lists hold codes, by the next keys
added). A learned part that cannot follow (a torch router, a query transform, a router set by
hand, or any part when the keys change from C++) is marked stale (see ``amips_plugins._freshness``).
The calibration is measured again at the next ``target_recall`` search (``.calibration``).
"""

from __future__ import annotations

import faiss
import numpy as np

from ..exact import topk_dot
from .learned import list_ids_of, stored_keys_of
from .state import FAISS_IVF, IVFState

__all__ = ["Upkeep"]


class Upkeep(IVFState):
    """The changes of keys of ``AmortizedIVFBase`` and what follows them."""

    def _maintained_router(self):
        """The router that follows changes of keys (one ``fit_router`` fitted), or None."""
        router = self._router_impl
        if self._ledger is None or not hasattr(router, "add_pieces"):
            return None
        return router

    def _add_keys(self, x: np.ndarray, ids: np.ndarray | None) -> None:
        """Add validated keys ``x`` (n, d) with ``ids`` (n,) (None: ntotal ..), under the write
        lock; a maintained router learns which of them answer its training queries."""
        stored = self._stored(x)
        self._check_add(x, ids)
        n, first = len(stored), self.ntotal
        router = self._maintained_router()
        # the keys' lists, assigned once here and handed to faiss (fast-scan's add_core packs
        # codes differently: there faiss assigns them again)
        by_faiss = router is None or n == 0 or isinstance(self, faiss.IndexIVFFastScan)
        lists = None
        if router is not None and n:
            lists = np.ascontiguousarray(self.quantizer.assign(stored, 1).ravel(), np.int64)
        if by_faiss and ids is None:
            self.add_c(n, faiss.swig_ptr(stored))
        elif by_faiss:
            self.add_with_ids_c(n, faiss.swig_ptr(stored), faiss.swig_ptr(ids))
        else:
            id_ptr = None if ids is None else faiss.swig_ptr(ids)
            self.add_core(n, faiss.swig_ptr(stored), id_ptr, faiss.swig_ptr(lists))
        if self.refines:
            self._raw_keys.append(x)
        if lists is None:
            self._changed(followed=router is not None)
            return
        ids = np.arange(first, first + n, dtype=np.int64) if ids is None else ids
        won, handovers = self._ledger.winners(x, ids)
        self._router_takes(router, x[won], lists[won], ids[won], handovers)
        self._changed(followed=True)

    def _router_takes(self, router, keys, lists, ids, handovers=None) -> None:
        """Make the keys that answer some ledger query pieces, where they are not already;
        a graph router links each query's previous answer to its new one (``handovers``)."""
        new = ~np.isin(ids, router.piece_ids)
        router.add_pieces(keys[new], lists[new], ids[new])
        if handovers is not None and hasattr(router, "link_pieces"):
            router.link_pieces(*handovers)

    def _keys_removed(self, removed: np.ndarray) -> None:
        """After faiss removed the keys ``removed`` (ids): their pieces go, and the ledger
        queries they answered get the best of the keys left."""
        router = self._maintained_router()
        self._changed(followed=router is not None)
        if router is None or len(removed) == 0:
            return
        router.remove_pieces(removed)
        orphans = self._ledger.orphan(removed)
        if len(orphans) == 0 or self.ntotal == 0 or not isinstance(self, faiss.IndexIVFFlat):
            return  # codes cannot give the keys back: the next keys added answer them
        offsets, ids = list_ids_of(self)
        keys = stored_keys_of(self, offsets, self._d)
        scores, rows = topk_dot(self._ledger.queries[orphans], keys, 1)
        self._ledger.answer(orphans, scores[:, 0], ids[rows[:, 0]])
        rows = np.unique(rows[:, 0])
        lists = np.searchsorted(offsets, rows, side="right") - 1
        self._router_takes(router, keys[rows], lists, ids[rows])

    def _keys_merged(self, other, add_id: int) -> None:
        """faiss's ``merge_from(other, add_id)``; a maintained router reads the other index's
        keys first (an IndexIVFFlat's) and takes them as if added."""
        router = self._maintained_router()
        plain = faiss.downcast_index(other)
        if router is None or not isinstance(plain, faiss.IndexIVFFlat):
            FAISS_IVF.merge_from(self, other, add_id)
            self._changed(followed=False)
            return
        offsets, ids = list_ids_of(plain)
        keys = stored_keys_of(plain, offsets, self._d)
        FAISS_IVF.merge_from(self, other, add_id)
        lists = np.repeat(np.arange(self.nlist), np.diff(offsets))
        ids = ids + add_id
        won, handovers = self._ledger.winners(keys, ids)
        self._router_takes(router, keys[won], lists[won], ids[won], handovers)
        self._changed(followed=True)

    def _keys_cleared(self) -> None:
        """After ``reset``: no key is a piece or an answer any more."""
        router = self._maintained_router()
        if router is not None:
            router.remove_pieces(router.piece_ids[router.piece_ids >= 0])
            self._ledger.orphan(self._ledger.answers[self._ledger.answers >= 0])
        self._changed(followed=router is not None)

    def _changed(self, *, followed: bool) -> None:
        """Note a change of keys; ``followed``: the router took it into account."""
        self._keys_version += 1
        self._keys_seen = self.ntotal
        if self._router_impl is not None and not followed:
            self._stale.add("router")
        if self._transform_impl is not None:
            self._stale.add("query_transform")

    def _note_changes_from_cpp(self) -> None:
        """A search's check that no key changed behind this class (faiss's C++ functions, or
        an ``IndexIDMap`` around it): such a change is followed by no learned part."""
        if self.ntotal != self._keys_seen:
            self._changed(followed=False)
