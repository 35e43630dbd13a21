"""The max-affine router evaluated approximately: a graph walk over its pieces.

Ranking lists by max_{p in P_c} q . p is itself a MIPS problem over the pieces, and a router of
many pieces (every training query's answer) ranks better than a small one but costs one inner
product per piece when scored exactly. Here the pieces are the elements of an inner-product HNSW
graph (built on the C++ core, inserted in descending norm order, as hnswlib builds), walked with
a beam of ``ef``: the lists of the ef best pieces found, in order, are the ranking. The graph
keeps only the pieces' 8-bit codes (a quarter of the bytes) and ranks what the walk found by the
values they stand for: on WordNet + MiniLM that ranking found the best key's list within 4-16
probes as often as exact scores did (within 0.0004). Its cost is the pieces the walk scores, a
few hundred to a few thousand whatever their number. On WordNet + MiniLM (d = 384) a graph over
41k pieces walked at ef 64 found the best key's list within 12 probes for 95.5% of the queries,
at 1.1 MFLOP of routing; scoring those pieces exactly costs 32 MFLOP.
"""

from __future__ import annotations

import io
import threading

import numpy as np

from .. import _core
from .._hnsw_file import insertion_order
from .._lookup import look_up
from .._sync import ReadWriteLock
from .._validation import as_int64, as_matrix, as_num_threads, as_positive_int

__all__ = ["PieceGraphRouter"]

# what a file keeps: the GraphSearch arguments (its scalars as 0-d arrays) and the router's own
_ARRAYS = ("links0", "upper", "upper_offsets", "levels", "deleted")
# a graph's codes and their ranges; files of earlier versions hold the pieces' keys instead
_CODES = ("codes", "code_low", "code_scale", "keys")
_SCALARS = ("max_m", "entry")
_SETTINGS = ("element_lists", "num_outputs", "ef")


class _Pieces:
    """The graph and what each of its elements stands for, shared by a router and its copies
    of other beams; changed under the write lock, walked under the read lock."""

    def __init__(self, graph, element_lists, element_ids, ef_construction: int, seed: int):
        self.graph, self.element_lists, self.element_ids = graph, element_lists, element_ids
        self.ef_construction, self.seed = ef_construction, seed
        self.lock = ReadWriteLock()


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
    ef_construction, seed : how ``add_pieces`` inserts

    Notes
    -----
    Pieces are inserted into the walked graph itself (``add_pieces``) and marked deleted there
    (``remove_pieces``); rankings wait for a change to finish.
    """

    member = "graph_router.npz"

    def __init__(
        self,
        arrays: dict,
        element_lists,
        num_outputs: int,
        ef: int,
        element_ids=None,
        *,
        ef_construction: int = 200,
        seed: int = 100,
    ):
        self._setup(
            _core.GraphSearch(**arrays),  # checks every link
            element_lists,
            element_ids,
            num_outputs,
            ef,
            ef_construction,
            seed,
        )

    def _setup(self, graph, element_lists, element_ids, num_outputs, ef, ef_construction, seed):
        size = graph.size
        self.num_outputs = as_positive_int(num_outputs, "num_outputs")
        lists = as_int64(element_lists, "element_lists", ndim=1)
        if len(lists) != size:
            raise ValueError(f"element_lists has {len(lists)} entries for a graph of {size} pieces")
        if lists.min() < 0 or lists.max() >= self.num_outputs:
            raise ValueError(f"element_lists must lie in 0 .. {self.num_outputs - 1}")
        ids = (
            np.full(size, -1, np.int64)
            if element_ids is None
            else as_int64(element_ids, "element_ids", ndim=1).copy()
        )
        if len(ids) != size:
            raise ValueError(f"{len(ids)} element_ids for {size} pieces")
        self._pieces = _Pieces(
            graph, lists, ids, as_positive_int(ef_construction, "ef_construction"), int(seed)
        )
        self.dim, self.ef = graph.dim, as_positive_int(ef, "ef")
        self._last = threading.local()  # this thread's last walk, for cost()

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
        seed: int = 100,
        piece_ids: np.ndarray | None = None,
    ) -> PieceGraphRouter:
        """The graph over ``pieces`` (m, d), grouped so that list c's are rows
        ``offsets[c]:offsets[c + 1]`` (a ``MaxAffineRouter``'s pieces, offsets and
        ``piece_ids``)."""
        x = as_matrix(pieces, "pieces", allow_empty=False)
        owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        order = insertion_order(x)
        graph = _core.GraphSearch(x.shape[1], M, keep_keys=False)
        graph.add(x[order], ef_construction, seed, as_num_threads(num_threads))
        ids = np.full(len(x), -1, np.int64) if piece_ids is None else np.asarray(piece_ids)
        self = object.__new__(cls)
        self._setup(graph, owner[order], ids[order], len(offsets) - 1, ef, ef_construction, seed)
        return self

    def with_ef(self, ef: int) -> PieceGraphRouter:
        """The same graph walked with another beam (pieces added to either are in both)."""
        other = object.__new__(PieceGraphRouter)
        other.__dict__.update(self.__dict__)
        other.ef, other._last = as_positive_int(ef, "ef"), threading.local()
        return other

    # --- pieces as keys come and go -----------------------------------------------------------
    def add_pieces(self, keys: np.ndarray, lists: np.ndarray, ids: np.ndarray) -> None:
        """Insert the keys (n, d) of the given ``lists`` (n,) and ``ids`` (n,) into the graph
        (by descending norm, as it was built), on every thread: the links then depend on the
        threads' timing, as in hnswlib (with one thread, on the keys and their order only)."""
        if len(keys) == 0:
            return
        pieces = self._pieces
        with pieces.lock.writing():
            order = insertion_order(keys)
            pieces.graph.add(keys[order], pieces.ef_construction, pieces.seed, as_num_threads(None))
            pieces.element_lists = np.concatenate([pieces.element_lists, lists[order]])
            pieces.element_ids = np.concatenate([pieces.element_ids, ids[order]])

    def link_pieces(self, sources: np.ndarray, targets: np.ndarray) -> int:
        """Link, on level 0, the piece that is key ``sources[i]`` to the one that is key
        ``targets[i]``, where both are pieces: a walk that reaches a query's previous answer
        finds its new one next. Returns how many links were added."""
        pieces = self._pieces
        with pieces.lock.writing():
            ids = pieces.element_ids
            keyed = np.flatnonzero(ids >= 0)  # pieces that are keys (-1: none)
            order = keyed[np.argsort(ids[keyed], kind="stable")]
            source = look_up(ids[order], order, np.asarray(sources, np.int64))
            target = look_up(ids[order], order, np.asarray(targets, np.int64))
            both = (source >= 0) & (target >= 0) & (source != target)
            if not both.any():
                return 0
            return pieces.graph.link(source[both], target[both], as_num_threads(None))

    def remove_pieces(self, ids: np.ndarray) -> int:
        """Mark the pieces that are the keys ``ids`` deleted (the walk passes through them but
        never ranks their lists); returns how many."""
        pieces = self._pieces
        with pieces.lock.writing():
            known = pieces.element_ids >= 0
            elements = np.flatnonzero(np.isin(pieces.element_ids, ids) & known)
            if len(elements):
                pieces.graph.mark_deleted(elements)
                pieces.element_ids[elements] = -1  # a deleted piece stands for no key
            return len(elements)

    @property
    def piece_ids(self) -> np.ndarray:
        """The id of the key each piece is (-1: a list mean, a removed key, or not known)."""
        return self._pieces.element_ids

    @property
    def element_lists(self) -> np.ndarray:
        """The list each piece stands for."""
        return self._pieces.element_lists

    @property
    def num_pieces(self) -> int:
        return self._pieces.graph.size

    @property
    def pieces(self) -> _Pieces:
        """The graph, each element's list and id, and the lock under which they stay unchanged
        (for a walk taken elsewhere: a search's steps in one call into the core)."""
        return self._pieces

    # --- the router protocol (amips_plugins.routing) ----------------------------------------
    def rank(self, queries: np.ndarray, nprobe: int, index, params) -> np.ndarray:
        threads = as_num_threads(None)
        n = len(queries)
        pieces = self._pieces
        with pieces.lock.reading():
            graph, element_lists = pieces.graph, pieces.element_lists
            ef = min(self.ef, graph.size)  # a beam wider than the pieces finds them all
            beam = np.array([ef], np.int32)
            _, elements, scored = graph.search(queries, queries, ef, beam, threads)
        # pieces scored per query: the walk's codes, then those it found ranked again
        self._last.pieces = scored / max(n, 1)
        count = min(nprobe, self.num_outputs)
        return _core.take_in_turn(
            elements, np.empty((n, 0), np.int64), count, a_labels=element_lists
        )

    def cost(self, index, nprobe: int) -> tuple[int, int]:
        pieces = getattr(self._last, "pieces", self.ef)
        return round(2 * self.dim * pieces), 0

    def to_bytes(self) -> bytes:
        pieces = self._pieces
        with pieces.lock.reading():
            arrays = io.BytesIO()
            np.savez(
                arrays,
                element_lists=pieces.element_lists,
                element_ids=pieces.element_ids,
                num_outputs=self.num_outputs,
                ef=self.ef,
                ef_construction=pieces.ef_construction,
                seed=pieces.seed,
                **pieces.graph.arrays(),
            )
        return arrays.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PieceGraphRouter:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            missing = {*_ARRAYS, *_SCALARS, *_SETTINGS} - set(stored.files)
            if missing:
                raise ValueError(f"a graph router file without {sorted(missing)}")
            arrays = {name: stored[name] for name in _ARRAYS}
            arrays.update({name: stored[name] for name in _CODES if name in stored.files})
            arrays.update({name: int(stored[name]) for name in _SCALARS})
            ids = stored["element_ids"] if "element_ids" in stored.files else None
            settings = {
                name: int(stored[name])
                for name in ("ef_construction", "seed")
                if name in stored.files
            }
            return cls(
                arrays,
                stored["element_lists"],
                int(stored["num_outputs"]),
                int(stored["ef"]),
                ids,
                **settings,
            )

    def __repr__(self) -> str:
        return (
            f"PieceGraphRouter({self.num_pieces} pieces over {self.num_outputs} lists, "
            f"dim {self.dim}, ef {self.ef})"
        )
