"""AmortizedHNSW: an ``hnswlib.Index(space="ip")`` drop-in with a choice of construction space,
norm-ordered insertion and an optional learned query transform.

Construction spaces (the graph is always searched by inner product, so distances are hnswlib's
``1 - q . x`` on the original vectors):

- ``"ip"``: the raw keys, as ``hnswlib.Index(space="ip")`` builds them;
- ``"xbox"``: the Xbox-augmented keys [x, sqrt(M^2 - |x|^2)], M the largest norm so far (grown
  batch by batch). All augmented keys share the norm M, so hnswlib's inner-product distance
  between them orders neighbours exactly as L2 does, and a query [q, 0] still scores q . x.

``add_items`` inserts every batch in descending norm order by default: large-norm keys are the
answers of most queries, and linking them first builds a better graph (Vespa saw the same), so a
batch arriving in random order gives the graph a sorted bulk load gives.

With a ``query_transform`` (a one-output KeyNet, SupportNet or MaxAffineNet), the graph is
searched with the predicted best key, ``candidates`` results are gathered and rescored exactly
with q on the C++ core, and the top k returned.
"""

from __future__ import annotations

import json
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

from ._io import atomic_path
from ._optional import require
from ._validation import as_int64, as_matrix, as_positive_int
from .exact import rescore, topk_rows
from .xbox import XboxTransform

__all__ = ["AmortizedHNSW"]

hnswlib = require("hnswlib", "hnsw")

_FORMAT = "amips_plugins.AmortizedHNSW"
_VERSION = 1
CONSTRUCTIONS = ("ip", "xbox")


class AmortizedHNSW:
    """A drop-in for ``hnswlib.Index(space="ip", dim=dim)``.

    Parameters
    ----------
    space : only ``"ip"`` (inner product)
    dim : dimension of keys and queries
    construction : ``"ip"`` or ``"xbox"`` (see the module docstring)
    sort_batches : insert each batch of ``add_items`` in descending norm order
    query_transform : one-output model predicting the best key, or None
    candidates : results gathered per query when searching with the predicted key (at least k)

    Methods and return conventions follow hnswlib: ``init_index``, ``add_items``,
    ``knn_query -> (labels uint64 (n, k), distances float32 (n, k))``, ``set_ef``, ``ef``,
    ``get_current_count``, ``get_max_elements``, ``resize_index``, ``mark_deleted``,
    ``unmark_deleted``, ``save_index``, ``load_index``; the hnswlib object is ``.index``.
    Differences: bad input (wrong dimension, NaN, k above the element count, an empty index)
    raises ValueError instead of RuntimeError, and a batch that cannot fit is refused whole.
    """

    def __init__(
        self,
        space: str = "ip",
        dim: int | None = None,
        *,
        construction: str = "ip",
        sort_batches: bool = True,
        query_transform=None,
        candidates: int = 100,
    ):
        if space != "ip":
            raise ValueError(
                f"AmortizedHNSW searches by inner product (space='ip'), got space={space!r}"
            )
        if construction not in CONSTRUCTIONS:
            raise ValueError(f"construction must be one of {CONSTRUCTIONS}, got {construction!r}")
        self.space, self.dim = space, as_positive_int(dim, "dim")
        self.construction, self.sort_batches = construction, bool(sort_batches)
        self.candidates = as_positive_int(candidates, "candidates")
        self.xbox = XboxTransform(self.dim) if construction == "xbox" else None
        self.index = hnswlib.Index(space="ip", dim=self._stored_dim)
        self._lock = threading.Lock()  # add_items / resize against each other
        self.query_transform = query_transform

    @property
    def _stored_dim(self) -> int:
        return self.dim + 1 if self.xbox is not None else self.dim

    @classmethod
    def wrap(cls, index, *, xbox: bool = False, **kwargs) -> AmortizedHNSW:
        """Wrap an existing ``hnswlib.Index(space="ip")``, shared and not copied. With ``xbox``, the
        index holds Xbox-augmented keys of dimension d + 1 (its M is read from the stored keys)."""
        if getattr(index, "space", None) != "ip":
            raise TypeError(f"wrap needs an hnswlib.Index with space='ip', got {index!r}")
        self = cls(
            "ip",
            index.dim - 1 if xbox else index.dim,
            construction="xbox" if xbox else "ip",
            **kwargs,
        )
        self.index = index
        if self.xbox is not None and index.element_count:
            stored = np.asarray(index.get_items(index.get_ids_list()), dtype=np.float32)
            self.xbox.load_state_dict(
                {
                    **self.xbox.state_dict(),
                    "count": len(stored),
                    "max_norm": float(np.sqrt((stored.astype(np.float64) ** 2).sum(1).max())),
                }
            )
        return self

    # --- learned part -------------------------------------------------------------------------
    @property
    def query_transform(self):
        return self._query_transform

    @query_transform.setter
    def query_transform(self, model) -> None:
        if model is not None:
            from .learn.transform import key_predictor

            self._predictor = key_predictor(model, self.dim)
        self._query_transform = model

    def fit_query_transform(self, keys, train_queries, model=None, **fit_kwargs) -> list[dict]:
        """Train ``model`` (default: a residual ``KeyNet(dim)``) on ``keys`` (those added), use it;
        ``fit_kwargs`` go to :func:`amips_plugins.fit`; returns its history."""
        from .learn.models import KeyNet
        from .learn.training import fit

        model = KeyNet(self.dim) if model is None else model
        history = fit(model, keys, train_queries, **fit_kwargs)
        self.query_transform = model
        return history

    # --- hnswlib's methods --------------------------------------------------------------------
    def init_index(
        self,
        max_elements: int,
        M: int = 16,
        ef_construction: int = 200,
        random_seed: int = 100,
        allow_replace_deleted: bool = False,
    ) -> None:
        self.index.init_index(
            max_elements=as_positive_int(max_elements, "max_elements"),
            M=M,
            ef_construction=ef_construction,
            random_seed=random_seed,
            allow_replace_deleted=allow_replace_deleted,
        )

    def add_items(
        self, data, ids=None, num_threads: int = -1, replace_deleted: bool = False
    ) -> None:
        """Insert keys ``data`` (n, dim) with labels ``ids`` (default: count .. count + n - 1); a
        label already present has its vector replaced, as in hnswlib."""
        x = as_matrix(data, "data", dim=self.dim)
        if len(x) == 0:
            return
        with self._lock:
            if ids is None:
                labels = np.arange(
                    self.index.element_count, self.index.element_count + len(x), dtype=np.int64
                )
            else:
                labels = as_int64(np.atleast_1d(ids), "ids", ndim=1)
                if len(labels) != len(x) or (labels < 0).any():
                    raise ValueError(
                        f"ids must be {len(x)} non-negative integers, got shape {labels.shape}"
                    )
            new = (
                len(x) if ids is None else int((~np.isin(labels, self.index.get_ids_list())).sum())
            )
            if not replace_deleted and self.index.element_count + new > self.index.max_elements:
                raise ValueError(
                    f"adding {new} elements to {self.index.element_count} exceeds max_elements = "
                    f"{self.index.max_elements}; call resize_index first"
                )
            if self.sort_batches:
                order = np.argsort(-np.einsum("ij,ij->i", x, x), kind="stable")
                x, labels = x[order], labels[order]
            stored = self.xbox.add_keys(x) if self.xbox is not None else x
            self.index.add_items(
                stored, labels, num_threads=num_threads, replace_deleted=replace_deleted
            )

    def knn_query(self, data, k: int = 1, num_threads: int = -1, filter=None):
        """The k keys of largest inner product found for every query of ``data`` (n, dim).

        Returns ``(labels, distances)``: uint64 and float32 (n, k), nearest first, distances
        ``1 - q . x`` as hnswlib's 'ip' space reports them.
        """
        q = as_matrix(data, "data", dim=self.dim)
        k = as_positive_int(k, "k")
        count = self.index.get_current_count()
        if count == 0:
            raise ValueError("the index is empty: add_items before knn_query")
        if k > count:
            raise ValueError(f"k = {k} exceeds the {count} elements in the index")
        if self._query_transform is None:
            return self.index.knn_query(
                self._as_stored(q), k=k, num_threads=num_threads, filter=filter
            )
        # Search with the predicted key, then rank the candidates by their inner product with q.
        width = min(max(k, self.candidates), count)
        labels, _ = self.index.knn_query(
            self._as_stored(self._predictor.keys(q)),
            k=width,
            num_threads=num_threads,
            filter=filter,
        )
        vectors = np.asarray(self.index.get_items(labels.ravel()), dtype=np.float32)[:, : self.dim]
        scores = rescore(q, vectors, np.arange(labels.size, dtype=np.int64).reshape(labels.shape))
        _, best = topk_rows(scores, k)
        top = np.take_along_axis(scores, best, axis=1)
        return np.take_along_axis(labels, best, axis=1), (1.0 - top).astype(np.float32)

    def _as_stored(self, q: np.ndarray) -> np.ndarray:
        return self.xbox.transform_queries(q) if self.xbox is not None else q

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(as_positive_int(ef, "ef"))

    @property
    def ef(self) -> int:
        return self.index.ef

    @ef.setter
    def ef(self, value: int) -> None:
        self.set_ef(value)

    @property
    def M(self) -> int:
        return self.index.M

    @property
    def ef_construction(self) -> int:
        return self.index.ef_construction

    @property
    def max_elements(self) -> int:
        return self.index.max_elements

    @property
    def element_count(self) -> int:
        return self.index.element_count

    def get_current_count(self) -> int:
        return self.index.get_current_count()

    def get_max_elements(self) -> int:
        return self.index.get_max_elements()

    def get_ids_list(self) -> list[int]:
        return self.index.get_ids_list()

    def get_items(self, ids=None) -> np.ndarray:
        """The original (not augmented) vectors of ``ids``, (n, dim) float32."""
        return np.asarray(self.index.get_items(ids), dtype=np.float32)[:, : self.dim]

    def resize_index(self, new_size: int) -> None:
        with self._lock:
            self.index.resize_index(as_positive_int(new_size, "new_size"))

    def mark_deleted(self, label: int) -> None:
        self.index.mark_deleted(label)

    def unmark_deleted(self, label: int) -> None:
        self.index.unmark_deleted(label)

    # --- persistence --------------------------------------------------------------------------
    def save_index(self, path) -> None:
        """Write the hnswlib graph, the Xbox state, the query transform and the config to one file
        (a zip archive), atomically."""
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "dim": self.dim,
            "construction": self.construction,
            "sort_batches": self.sort_batches,
            "candidates": self.candidates,
            "ef": self.index.ef,
            "xbox": None if self.xbox is None else self.xbox.state_dict(),
        }
        with tempfile.TemporaryDirectory() as tmp, atomic_path(path) as out:
            graph = Path(tmp) / "graph.bin"
            self.index.save_index(str(graph))
            with zipfile.ZipFile(out, "w") as z:
                z.writestr("meta.json", json.dumps(meta))
                z.write(graph, "graph.bin")
                if self._query_transform is not None:
                    z.writestr("query_transform.pt", self._query_transform.to_bytes())

    def load_index(self, path, max_elements: int = 0) -> None:
        """Restore an index written by :meth:`save_index` into this object (whose ``dim`` must
        match); a plain hnswlib file, a foreign or corrupt file raises ValueError."""
        try:
            with zipfile.ZipFile(path) as z, tempfile.TemporaryDirectory() as tmp:
                meta = json.loads(z.read("meta.json"))
                if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                    raise ValueError(f"{path} is not an AmortizedHNSW file")
                if meta.get("version") != _VERSION:
                    raise ValueError(
                        f"{path} has AmortizedHNSW format version {meta.get('version')}, "
                        f"this release reads {_VERSION}"
                    )
                if meta["dim"] != self.dim:
                    raise ValueError(
                        f"{path} holds an index of dim {meta['dim']}, this one has dim {self.dim}"
                    )
                graph = z.extract("graph.bin", tmp)
                transform = (
                    z.read("query_transform.pt") if "query_transform.pt" in z.namelist() else None
                )
                xbox = None if meta["xbox"] is None else XboxTransform.from_state_dict(meta["xbox"])
                index = hnswlib.Index(space="ip", dim=self.dim + (xbox is not None))
                index.load_index(graph, max_elements=max_elements)
        except (
            zipfile.BadZipFile,
            KeyError,
            json.JSONDecodeError,
            UnicodeDecodeError,
            RuntimeError,
        ) as e:
            raise ValueError(
                f"{path} is not a readable AmortizedHNSW file ({type(e).__name__}: {e}); "
                "for a plain hnswlib file, load it with hnswlib and pass it to "
                "AmortizedHNSW.wrap"
            ) from None
        index.set_ef(meta["ef"])
        model = None
        if transform is not None:
            from .learn.models import load_model

            model = load_model(transform)
        self.index, self.xbox, self.construction = index, xbox, meta["construction"]
        self.sort_batches, self.candidates = meta["sort_batches"], meta["candidates"]
        self.query_transform = model

    def __repr__(self) -> str:
        return (
            f"AmortizedHNSW(dim={self.dim}, construction={self.construction!r}, "
            f"count={self.index.element_count}, ef={self.index.ef})"
        )
