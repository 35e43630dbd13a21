"""The max-affine router evaluated approximately: a graph walk over its pieces.

Ranking lists by max_{p in P_c} q . p is itself a MIPS problem over the pieces, and a router of
many pieces (every training query's answer) ranks better than a small one but costs one inner
product per piece when scored exactly. Here the pieces are the elements of an inner-product HNSW
graph (built by hnswlib, inserted in descending norm order), walked on the C++ core with a beam of
``ef``: the lists of the ef best pieces found, in order, are the ranking. Its cost is the pieces
the walk scores, a few hundred to a few thousand whatever their number. On WordNet + MiniLM
(d = 384) a graph over 41k pieces walked at ef 64 found the best key's list within 12 probes for
95.5% of the queries, at 1.1 MFLOP of routing; scoring those pieces exactly costs 32 MFLOP.
"""

from __future__ import annotations

import io
import threading

import numpy as np

from .. import _core
from .._hnsw_file import graph_arrays, index_from_arrays, insertion_order
from .._validation import as_int64, as_matrix, as_num_threads, as_positive_int

__all__ = ["PieceGraphRouter"]

# what a file keeps: the GraphSearch arguments (its scalars as 0-d arrays) and the router's own
_ARRAYS = ("keys", "links0", "upper", "upper_offsets", "levels", "deleted")
_SCALARS = ("max_m", "entry")
_SETTINGS = ("element_lists", "num_outputs", "ef")


class PieceGraphRouter:
    """Lists ranked by the best pieces a graph walk finds, each piece standing for its list.

    Parameters
    ----------
    arrays : the ``_core.GraphSearch`` arguments of a graph over the pieces
    element_lists : int array (m,), the list of the piece at each graph element
    num_outputs : the number of lists
    ef : the walk's beam; its ef best pieces give the ranking (lists short of nprobe distinct
        lists are padded with -1)
    element_ids : optional int array (m,), the id of the key each element is (-1: a list mean,
        or not known), so that ``remove_pieces`` can drop the pieces of removed keys

    Notes
    -----
    Pieces are added and removed in an hnswlib graph (``add_pieces``, ``remove_pieces``); the walk
    reads a copy of it, made again at the first ranking after a change.
    """

    member = "graph_router.npz"

    def __init__(self, arrays: dict, element_lists, num_outputs: int, ef: int, element_ids=None):
        self.num_outputs = as_positive_int(num_outputs, "num_outputs")
        self.element_lists = as_int64(element_lists, "element_lists", ndim=1)
        self._arrays = arrays
        self._graph: _core.GraphSearch | None = _core.GraphSearch(**arrays)  # checks every link
        size = self._graph.size
        if len(self.element_lists) != size:
            raise ValueError(
                f"element_lists has {len(self.element_lists)} entries for a graph of {size} pieces"
            )
        if self.element_lists.min() < 0 or self.element_lists.max() >= self.num_outputs:
            raise ValueError(f"element_lists must lie in 0 .. {self.num_outputs - 1}")
        self.element_ids = (
            np.full(size, -1, np.int64)
            if element_ids is None
            else as_int64(element_ids, "element_ids", ndim=1)
        )
        if len(self.element_ids) != size:
            raise ValueError(f"{len(self.element_ids)} element_ids for {size} pieces")
        self.dim = self._graph.dim
        self.ef = as_positive_int(ef, "ef")
        self._last = threading.local()  # this thread's last walk, for cost()
        # The hnswlib graph pieces are added to, made from the arrays when first needed (the
        # same graph whether this router was built or read from a file); its labels are the
        # element numbers of the arrays, then the new pieces' numbers.
        self._index = None
        self._label_lists, self._label_ids = self.element_lists, self.element_ids.copy()
        self._changing = threading.Lock()

    @classmethod
    def build(
        cls,
        pieces,
        offsets,
        ef: int,
        *,
        M: int = 16,
        ef_construction: int = 200,
        num_threads: int | None = None,
        seed: int = 0,
        piece_ids: np.ndarray | None = None,
    ) -> PieceGraphRouter:
        """The graph over ``pieces`` (m, d), grouped so that list c's are rows
        ``offsets[c]:offsets[c + 1]`` (a ``MaxAffineRouter``'s pieces, offsets and
        ``piece_ids``)."""
        import hnswlib  # only to build

        x = as_matrix(pieces, "pieces", allow_empty=False)
        owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        graph = hnswlib.Index(space="ip", dim=x.shape[1])
        graph.init_index(len(x), M=M, ef_construction=ef_construction, random_seed=seed)
        graph.set_num_threads(as_num_threads(num_threads))
        order = insertion_order(x)
        graph.add_items(x[order], order)
        arrays, labels = graph_arrays(graph)
        ids = np.full(len(x), -1, np.int64) if piece_ids is None else piece_ids
        return cls(arrays, owner[labels], len(offsets) - 1, ef, ids[labels])

    def with_ef(self, ef: int) -> PieceGraphRouter:
        """The same graph walked with another beam (shares the graph until pieces change)."""
        other = object.__new__(PieceGraphRouter)
        other.__dict__.update(self.__dict__)
        other.ef, other._last = as_positive_int(ef, "ef"), threading.local()
        other._changing = threading.Lock()
        return other

    # --- pieces as keys come and go -----------------------------------------------------------
    def add_pieces(self, keys: np.ndarray, lists: np.ndarray, ids: np.ndarray) -> None:
        """Insert the keys (n, d) of the given ``lists`` (n,) and ``ids`` (n,) into the graph
        (by descending norm, as it was built)."""
        if len(keys) == 0:
            return
        with self._changing:
            index = self._live_index()
            first = len(self._label_lists)
            if index.element_count + len(keys) > index.max_elements:
                index.resize_index(max(2 * index.max_elements, index.element_count + len(keys)))
            order = insertion_order(keys)
            # on every thread (2 threads: 1.8x faster on GloVe); hnswlib's links then depend
            # on the threads' timing, as in the router's own build
            index.add_items(keys[order], first + order, num_threads=as_num_threads(None))
            self._label_lists = np.concatenate([self._label_lists, lists])
            self._label_ids = np.concatenate([self._label_ids, ids])
            self._graph = None

    def remove_pieces(self, ids: np.ndarray) -> int:
        """Mark the pieces that are the keys ``ids`` deleted (the walk passes through them but
        never ranks their lists); returns how many."""
        with self._changing:
            labels = np.flatnonzero(np.isin(self._label_ids, ids) & (self._label_ids >= 0))
            if len(labels):
                index = self._live_index()
                for label in labels.tolist():
                    index.mark_deleted(label)
                self._label_ids[labels] = -1  # a deleted piece stands for no key
                self._graph = None
            return len(labels)

    def _live_index(self):
        if self._index is None:
            self._index = index_from_arrays(self._arrays, np.arange(len(self.element_lists)))
        return self._index

    def _walked(self):
        """The GraphSearch of the current pieces (copied from the hnswlib graph after a
        change)."""
        with self._changing:
            if self._graph is None:
                self._arrays, labels = graph_arrays(self._index)
                self._graph = _core.GraphSearch(**self._arrays)
                self.element_lists = self._label_lists[labels]
                self.element_ids = self._label_ids[labels]
            return self._graph, self.element_lists

    @property
    def piece_ids(self) -> np.ndarray:
        """The id of the key each piece is (-1: a list mean, a removed key, or not known)."""
        return self._label_ids

    @property
    def num_pieces(self) -> int:
        return self._walked()[0].size

    # --- the router protocol (amips_plugins.routing) ----------------------------------------
    def rank(self, queries: np.ndarray, nprobe: int, index, params) -> np.ndarray:
        threads = as_num_threads(None)
        n = len(queries)
        graph, element_lists = self._walked()
        ef = min(self.ef, graph.size)  # a beam wider than the pieces finds them all
        beam = np.full(n, ef, np.int32)
        _, elements, scored = graph.search(queries, queries, ef, beam, threads)
        lists = np.where(elements >= 0, element_lists[np.maximum(elements, 0)], -1)
        # pieces scored per query: the walk's codes, then the ef found scored exactly
        self._last.pieces = (scored + ef * n) / max(n, 1)
        return _core.take_in_turn(lists, np.empty((n, 0), np.int64), min(nprobe, self.num_outputs))

    def cost(self, index, nprobe: int) -> tuple[int, int]:
        pieces = getattr(self._last, "pieces", self.ef)
        return round(2 * self.dim * pieces), 0

    def to_bytes(self) -> bytes:
        self._walked()
        arrays = io.BytesIO()
        np.savez(
            arrays,
            element_lists=self.element_lists,
            element_ids=self.element_ids,
            num_outputs=self.num_outputs,
            ef=self.ef,
            **self._arrays,
        )
        return arrays.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PieceGraphRouter:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            missing = {*_ARRAYS, *_SCALARS, *_SETTINGS} - set(stored.files)
            if missing:
                raise ValueError(f"a graph router file without {sorted(missing)}")
            arrays = {name: stored[name] for name in _ARRAYS}
            arrays.update({name: int(stored[name]) for name in _SCALARS})
            ids = stored["element_ids"] if "element_ids" in stored.files else None
            return cls(
                arrays, stored["element_lists"], int(stored["num_outputs"]), int(stored["ef"]), ids
            )

    def __repr__(self) -> str:
        return (
            f"PieceGraphRouter({self.num_pieces} pieces over {self.num_outputs} lists, "
            f"dim {self.dim}, ef {self.ef})"
        )
