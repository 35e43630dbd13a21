"""AmortizedIVFBase: a faiss IVF index whose lists are chosen by a learned part; its faiss-facing
methods (construction, ``train``, ``add``, ``reset``, ``remove_ids``, ...). The other concerns are
its parts, one module each: search (``search``), learned parts (``learned``), declared
recall (``calibration``), files (``files``)."""

from __future__ import annotations

import threading
from typing import Any

import faiss
import numpy as np

from .._sync import ReadWriteLock
from .._validation import as_key_ids, as_matrix, as_positive_int
from ..xbox import XboxTransform
from .calibration import Calibration
from .files import Files
from .learned import Learned
from .refine import Refine, refined_parts
from .search import Search
from .state import AMORTIZED, FAISS_IVF
from .upkeep import Upkeep

__all__ = ["AmortizedIVFBase"]


class AmortizedIVFBase(Files, Calibration, Learned, Upkeep, Refine, Search):
    """The learned choice of lists, shared by ``AmortizedIVF`` (``faiss.IndexIVFFlat``) and
    the classes for faiss's compressed IVF indexes (``AmortizedIVFPQ``,
    ``AmortizedIVFScalarQuantizer``, ``AmortizedIVFPQFastScan`` and, where faiss has
    it, ``AmortizedIVFRaBitQ``): each also derives from its faiss class, whose C++ object it is.
    Make one with ``from_faiss``, ``from_factory`` or ``load``.

    Compressed lists cannot give the keys back exactly, so the learned parts are fitted from the
    raw keys the caller passes (``fit_router(train_queries, keys=...)``, row i the key with id i);
    the index's own codes are read only for IndexIVFFlat. An index that re-ranks (a factory
    string ending ``",RFlat"``) keeps its raw keys, and needs none passed.
    """

    def _init_learned(self, d, xbox, query_transform, router, probe_union):
        self._d, self.xbox = d, xbox
        # Searches read the lists while add / reset change them: faiss does not order the two.
        self._lock = ReadWriteLock()
        self._recalibrating = threading.Lock()
        self.last_search_stats = {}  # replaced whole by each search
        self._stale, self._keys_seen = set(), self.ntotal
        self.query_transform, self.router = query_transform, router
        self.probe_union = probe_union

    @staticmethod
    def _adopt(index, owner=None) -> AmortizedIVFBase:
        """An instance of the class for ``index``'s faiss class over its C++ object (shared, not
        copied); ``owner``: the proxy that frees that object, kept alive (default ``index``)."""
        amortized = AMORTIZED[type(index)]
        self = amortized.__new__(amortized)
        self.this = index.this
        self.referenced_objects = [index if owner is None else owner]
        return self

    @classmethod
    def from_faiss(
        cls, index, *, query_transform=None, router=None, probe_union: bool | None = None
    ) -> AmortizedIVFBase:
        """Wrap an existing inner-product faiss IVF index (shared, not copied): an IndexIVFFlat
        gives an ``AmortizedIVF``, an IndexIVFPQ an ``AmortizedIVFPQ``, and so on for
        every faiss IVF class listed in the README. An ``IndexRefineFlat`` around one gives
        that class re-ranking its candidates from the raw keys (copied from the refine index),
        at the refine's ``k_factor``; an ``IndexRefine`` over a float16 ``IndexScalarQuantizer``
        the same from float16 raw keys."""
        plain: Any = faiss.downcast_index(index) if isinstance(index, faiss.Index) else None
        plain, raw, k_factor = refined_parts(plain)
        if type(plain) not in AMORTIZED or plain.metric_type != faiss.METRIC_INNER_PRODUCT:
            names = ", ".join(c.__name__ for c in AMORTIZED)
            raise TypeError(
                f"from_faiss needs an inner-product faiss IVF index ({names}), or an "
                f"IndexRefineFlat around one, got {index!r:.100}"
            )
        self = cls._adopt(plain, owner=index)
        self._init_learned(plain.d, None, query_transform, router, probe_union)
        self._keep_raw_keys(raw, k_factor)
        return self

    @classmethod
    def from_factory(cls, d: int, description: str, **learned) -> AmortizedIVFBase:
        """``faiss.index_factory(d, description, faiss.METRIC_INNER_PRODUCT)`` with a learned
        part, for an IVF description such as ``"IVF1024,PQ32x8"``, ``"IVF1024,SQ8"``,
        ``"IVF1024,PQ32x4fs"`` or ``"IVF1024,Flat"``, or one ending ``",RFlat"``
        (``"IVF1024,PQ32x4fs,RFlat"``): the best candidates of the compressed scan re-ranked
        exactly from the raw keys the index keeps, or ``",Refine(SQfp16)"``: re-ranked from
        float16 raw keys, half the memory; ``learned`` as for ``from_faiss``."""
        d = as_positive_int(d, "d")
        try:
            index = faiss.index_factory(d, description, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            message = str(e).strip().splitlines()[-1]
            raise ValueError(f"faiss cannot build {description!r}: {message}") from None
        return cls.from_faiss(index, **learned)

    @property
    def nprobe(self) -> int:
        return FAISS_IVF.nprobe.__get__(self)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        FAISS_IVF.nprobe.__set__(self, as_positive_int(value, "nprobe"))

    # --- faiss's methods ----------------------------------------------------------------------
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
            if self.ntotal:  # the keys stay in the lists of the old centroids
                self._changed(followed=False)

    def add(self, x) -> None:
        """Add keys ``x`` (n, d) with ids ntotal .. ntotal + n - 1."""
        x = as_matrix(x, "x", dim=self._d)
        with self._lock.writing():
            self._add_keys(x, None)

    def add_with_ids(self, x, ids) -> None:
        """Add keys ``x`` (n, d) with the ``ids`` (n,): integers in 0 .. 2**63 - 1 (-1 is the
        padding searches return, so no key may have it)."""
        x = as_matrix(x, "x", dim=self._d)
        ids = as_key_ids(ids, len(x))
        with self._lock.writing():
            self._add_keys(x, ids)

    def reset(self) -> None:
        """Remove every key (the lists' centroids stay; a router fitted by ``fit_router`` keeps
        its training queries and takes its pieces from the keys added next)."""
        with self._lock.writing():
            FAISS_IVF.reset(self)
            if self.refines:
                self._raw_keys.clear()
            if self.xbox is not None:
                self.xbox = XboxTransform(self._d)
            self._keys_cleared()

    def remove_ids(self, sel) -> int:
        """faiss's ``remove_ids`` (an IDSelector or an array of ids), ordered against searches;
        returns the number of keys removed."""
        self._refuse_removal("remove_ids")
        with self._lock.writing():
            # which ids went (sel may be any IDSelector): needed by a router that follows them
            follows = self._maintained_router() is not None
            before = self._list_ids()[1] if follows else np.empty(0, np.int64)
            count = FAISS_IVF.remove_ids(self, sel)
            if count:
                after = self._list_ids()[1] if follows else before
                self._keys_removed(np.setdiff1d(before, after))
            return count

    def update_vectors(self, keys, x) -> None:
        """faiss's ``update_vectors`` (after ``make_direct_map``): the keys with ids ``keys``
        (n,) get the vectors ``x`` (n, d), ordered against searches (not with ``xbox``: the
        vectors would need augmenting). A learned part does not follow it: it is marked stale."""
        if self.xbox is not None:
            raise ValueError("update_vectors is not supported with xbox")
        self._refuse_removal("update_vectors")
        x = as_matrix(x, "x", dim=self._d)
        keys = as_key_ids(keys, len(x))
        with self._lock.writing():
            self.update_vectors_c(len(x), faiss.swig_ptr(keys), faiss.swig_ptr(x))
            self._changed(followed=False)

    def merge_from(self, other, add_id: int = 0) -> None:
        """faiss's ``merge_from``, ordered against searches (not with ``xbox``: the other index's
        keys were augmented for another max norm)."""
        if self.xbox is not None:
            raise ValueError("merge_from is not supported with xbox")
        self._refuse_removal("merge_from")
        with self._lock.writing():
            self._keys_merged(other, add_id)

    def __repr__(self) -> str:
        parts = [
            f"d={self._d}",
            f"nlist={self.nlist}",
            f"ntotal={self.ntotal}",
            f"nprobe={self.nprobe}",
        ]
        if self.xbox is not None:
            parts.append("xbox")
        if self.refines:
            parts.append(f"k_factor={self.k_factor:g}")
        if self._router is not None:
            parts.append(f"router={type(self._router).__name__}")
        if self._query_transform is not None:
            parts.append(f"query_transform={type(self._query_transform).__name__}")
        if self.probe_union is not None:
            parts.append(f"probe_union={self.probe_union}")
        return f"{type(self).__name__}({', '.join(parts)})"
