"""
amips_plugins C++ core: exact inner-product search and the Xbox transform.
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
__all__: list[str] = ['Deepening', 'GraphSearch', 'ListViews', 'XboxTransform', 'all_finite', 'default_num_threads', 'detected_simd_level', 'max_threads', 'pack_keys', 'release_free_memory', 'rescore', 'routed_search', 'scan_lists', 'score_over_norm', 'segment_max_dot', 'segment_max_dot_packed', 'simd_level', 'take_better_answers', 'take_in_turn', 'topk_dot', 'topk_dot_packed', 'topk_rows', 'unpack_keys']
class ListViews:
    """
    Inverted lists held elsewhere (faiss's): for each list its rows, float32 or float16 (n, dim), every list alike, and their ids, int64 (n,); the arrays are kept alive and must not change while the views are used.
    """
    @staticmethod
    def pq4(blocks: collections.abc.Sequence[numpy.ndarray], ids: collections.abc.Sequence[numpy.ndarray], codebook: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], dim: typing.SupportsInt | typing.SupportsIndex) -> ListViews:
        """
        Lists of 4-bit product-quantization codes as faiss's fast-scan IVF keeps them: each list's blocks, uint8 (1-D, a block of m2 * 16 bytes per 32 keys, m2 = m rounded up to even), its ids int64 (n,), and the codebook (m, 16, dim / m) float32; scanned approximately, each query's table of subquantizer scores quantized to bytes.
        """
    def __init__(self, rows: collections.abc.Sequence[numpy.ndarray], ids: collections.abc.Sequence[numpy.ndarray], dim: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class Deepening:
    """
    How far a calibrated scan goes for each query: its first `first` probes, then nprobe[group] in all, the group the one of `edges` (ascending) its kth best score (1-based) over its norm reaches.
    """
    def __init__(self, first: typing.SupportsInt | typing.SupportsIndex, kth: typing.SupportsInt | typing.SupportsIndex, edges: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], nprobe: typing.Annotated[numpy.typing.ArrayLike, numpy.int64]) -> None:
        ...
    def nprobe_for(self, kth_scores: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], queries: typing.Annotated[numpy.typing.ArrayLike, numpy.float32]) -> numpy.typing.NDArray[numpy.int64]:
        """
        Each query's nprobe (n,) int64 from its kth best score found (n,) in the first probes.
        """
    @property
    def first(self) -> int:
        ...
    @property
    def kth(self) -> int:
        ...
class XboxTransform:
    def __init__(self, dim: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def add_keys(self, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.float32]) -> numpy.typing.NDArray[numpy.float32]:
        ...
    def set_state(self, max_norm: typing.SupportsFloat | typing.SupportsIndex, count: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def transform_queries(self, queries: typing.Annotated[numpy.typing.ArrayLike, numpy.float32]) -> numpy.typing.NDArray[numpy.float32]:
        ...
    @property
    def count(self) -> int:
        ...
    @property
    def dim(self) -> int:
        ...
    @property
    def max_norm(self) -> float:
        ...
class GraphSearch:
    """
    Beam search over an HNSW graph (a copy of hnswlib's, or one grown by add): 8-bit codes for the walk, exact inner products (or, for a graph of codes only, those of the codes' values) for the returned ranking.
    """
    @typing.overload
    def __init__(self, *, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.float32] | None = None, links0: typing.Annotated[numpy.typing.ArrayLike, numpy.uint32], upper: typing.Annotated[numpy.typing.ArrayLike, numpy.uint32], upper_offsets: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], levels: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], max_m: typing.SupportsInt | typing.SupportsIndex, entry: typing.SupportsInt | typing.SupportsIndex, deleted: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8], code_low: typing.Annotated[numpy.typing.ArrayLike, numpy.float32] | None = None, code_scale: typing.Annotated[numpy.typing.ArrayLike, numpy.float32] | None = None, codes: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8] | None = None, basis: typing.Annotated[numpy.typing.ArrayLike, numpy.float32] | None = None) -> None:
        """
        A graph of keys (or of codes (n, r) uint8 with their ranges): links0 (n, max_m0 + 1) with each element's count of links first, the upper levels' blocks of max_m + 1 words from upper_offsets[i], levels, entry point, deleted marks. With basis (r, dim), the codes are of the keys' components along its rows.
        """
    @typing.overload
    def __init__(self, dim: typing.SupportsInt | typing.SupportsIndex, max_m: typing.SupportsInt | typing.SupportsIndex = 16, keep_keys: bool = True, basis: typing.Annotated[numpy.typing.ArrayLike, numpy.float32] | None = None) -> None:
        """
        An empty graph to add keys to: max_m links per element (2 max_m on level 0); without keep_keys, codes only, and what a walk finds ranked by their values. With basis (r, dim), codes of the keys' r components along its rows, for the walk.
        """
    def add(self, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], ef_construction: typing.SupportsInt | typing.SupportsIndex = 200, seed: typing.SupportsInt | typing.SupportsIndex = 100, num_threads: typing.SupportsInt | typing.SupportsIndex = 0, fill_lists: bool = False) -> None:
        """
        Insert keys (n, dim) as the next elements, as hnswlib inserts, scoring by codes; with one thread the graph depends on the keys, their order and seed only. With fill_lists, lists the heuristic leaves short are filled with the best candidates it passed over.
        """
    def arrays(self) -> dict:
        """
        The constructor's arguments for the graph as it stands (copies).
        """
    def keys(self, elements: typing.Annotated[numpy.typing.ArrayLike, numpy.int64]) -> numpy.typing.NDArray[numpy.float32]:
        """
        The keys of elements (m,) as rows (m, dim) (a graph that keeps its keys).
        """
    def link(self, sources: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], targets: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> int:
        """
        Add the level-0 link sources[i] -> targets[i] of each pair, each source's in order, where the source lacks it: into the room its list has, then in place of links the heuristic would not choose there (those that filled it); returns how many were added.
        """
    def mark_deleted(self, elements: typing.Annotated[numpy.typing.ArrayLike, numpy.int64]) -> None:
        """
        Mark elements deleted: walked through, never returned.
        """
    def reserve(self, capacity: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Room for capacity elements: adds up to it never move or over-allocate the arrays.
        """
    def search(self, walk: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], rank: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], k: typing.SupportsInt | typing.SupportsIndex, ef: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], num_threads: typing.SupportsInt | typing.SupportsIndex = 0, filter: collections.abc.Callable | None = None, groups: typing.Annotated[numpy.typing.ArrayLike, numpy.float32] | None = None, labels: typing.Annotated[numpy.typing.ArrayLike, numpy.int64] | None = None) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64], int]:
        """
        (scores, elements, inner products computed: codes and exact): the k best found by exact inner product with rank after a walk by walk with a beam of ef[i] per query (one ef: every query's); -inf / -1 past what was found. With groups (G, columns), ef has G entries and a query takes that of the group of largest inner product with its rank row. With filter (a callable on element numbers), only elements it accepts are kept. With labels (one per element), elements are returned as their labels.
        """
    def unmark_deleted(self, elements: typing.Annotated[numpy.typing.ArrayLike, numpy.int64]) -> None:
        """
        Undo mark_deleted.
        """
    def update(self, elements: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], keys: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], ef_construction: typing.SupportsInt | typing.SupportsIndex = 200, fill_lists: bool = False) -> None:
        """
        Give elements (m,) the keys (m, dim) in place, each linked again where its new key lies (hnswlib's updatePoint); fill_lists as for add.
        """
    @property
    def basis(self) -> numpy.typing.NDArray[numpy.float32] | None:
        """
        (r, dim): the directions the walk's codes hold the keys' components along; None: every dimension.
        """
    @property
    def code_ranges(self) -> numpy.typing.NDArray[numpy.float32]:
        """
        (2, r): code c of component t stands for code_ranges[0, t] + c * code_ranges[1, t] (r: the basis's rows, or dim).
        """
    @property
    def dim(self) -> int:
        ...
    @property
    def max_m(self) -> int:
        ...
    @property
    def memory_bytes(self) -> int:
        ...
    @property
    def size(self) -> int:
        ...
    @property
    def upper_words(self) -> int:
        ...
def all_finite(x: typing.Annotated[numpy.typing.ArrayLike, numpy.float32]) -> bool:
    """
    True when no element is NaN or Inf.
    """
def default_num_threads() -> int:
    """
    Threads a call uses when it names none: AMIPS_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs this process may run on.
    """
def detected_simd_level() -> str:
    """
    Best instruction set the CPU and OS support, ignoring AMIPS_SIMD.
    """
def pack_keys(panels: numpy.ndarray, first: typing.SupportsInt | typing.SupportsIndex, x: typing.Annotated[numpy.typing.ArrayLike, numpy.float32]) -> None:
    """
    Packs the rows of x (a multiple of 64) into key slots first.. of a panel buffer.
    """
def release_free_memory() -> None:
    """
    Hands the C heap's free pages back to the system (glibc: malloc_trim). After a large block is freed glibc keeps up to 64 MB of later frees for reuse; a build's transients would stay in the process's memory.
    """
def rescore(queries: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], keys: numpy.ndarray, candidate_ids: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> numpy.typing.NDArray[numpy.float32]:
    """
    scores (nq, m): queries[i] . keys[candidate_ids[i, j]], -inf where the id is -1; keys float32, or float16 scored as the floats they stand for (neither copied).
    """
def routed_search(queries: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], graph: GraphSearch, element_lists: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], beam: typing.SupportsInt | typing.SupportsIndex, nprobe: typing.SupportsInt | typing.SupportsIndex, panels: numpy.ndarray, n_packed: typing.SupportsInt | typing.SupportsIndex, tail: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], in_turn: bool, centroid_rows: typing.Annotated[numpy.typing.ArrayLike, numpy.float32] | None, lists: ListViews, deepening: Deepening, depth: typing.SupportsInt | typing.SupportsIndex, raw_keys: numpy.ndarray | None, k: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64], numpy.typing.NDArray[numpy.int64], int, int, int, float]:
    """
    A calibrated IVF search in one call: each query's nprobe lists ranked by a walk of the graph of pieces (beam; element_lists: each element's list), the packed centroids' ranking taken in turn (in_turn) and filling short rows; scanned with the deepening for depth candidates (scores plus q . centroid_rows[list] where given), re-ranked from raw_keys (float32 or float16) to k where given. (scores, ids (nq, k); each query's lists scanned (nq,); keys scanned; lists scanned; the walk's inner products; the seconds spent ranking lists).
    """
def scan_lists(queries: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], probes: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], lists: ListViews, k: typing.SupportsInt | typing.SupportsIndex, offsets: typing.Any = None, num_threads: typing.SupportsInt | typing.SupportsIndex = 0, deepening: typing.Any = None) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64], int, numpy.typing.NDArray[numpy.int64]]:
    """
    Top-k keys by inner product for each query among the lists it probes (probes (nq, nprobe) int64, -1: none), each list's scores plus offsets (nq, nprobe) where given, with a Deepening only the probes each query reaches: (scores float32, ids int64, each (nq, k), best first, ties by lower id, padded with -FLT_MAX / -1 as faiss pads; the inner products computed; each query's probes scanned (nq,) int64).
    """
def score_over_norm(scores: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], queries: typing.Annotated[numpy.typing.ArrayLike, numpy.float32]) -> numpy.typing.NDArray[numpy.float32]:
    """
    Every query's score (n,) over its norm (at least 1e-30): a calibrated search's feature.
    """
def segment_max_dot(queries: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], keys: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], offsets: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]:
    ...
def segment_max_dot_packed(queries: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], panels: numpy.ndarray, n_packed: typing.SupportsInt | typing.SupportsIndex, tail: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], offsets: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]:
    """
    segment_max_dot over the first n_packed keys of a buffer filled by pack_keys, then the rows of tail; offsets number the keys in that order.
    """
def simd_level() -> str:
    """
    Instruction set in use: the best supported, capped by AMIPS_SIMD.
    """
def take_better_answers(queries: numpy.ndarray, query_norms: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], offsets: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], scores: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], answers: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], keys: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], key_norms: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], ids: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], key_offsets: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], key_rows: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64], numpy.typing.NDArray[numpy.uint8]]:
    """
    (scores, answers, changed) of grouped queries after checking each group's listed keys (rows of keys by descending norm) against it: a key that beats a query's score becomes its answer (amips_plugins.routing.ledger).
    """
def take_in_turn(a: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], b: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], count: typing.SupportsInt | typing.SupportsIndex, a_labels: typing.Any = None) -> numpy.typing.NDArray[numpy.int64]:
    """
    Per row, the first count distinct non-negative entries of a[0], b[0], a[1], b[1], ... (padded with -1); with a_labels (1-D), a's entries stand for a_labels[entry] (-1: none).
    """
def topk_dot(queries: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], keys: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], k: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]:
    ...
def topk_dot_packed(queries: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], panels: numpy.ndarray, n_packed: typing.SupportsInt | typing.SupportsIndex, tail: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], k: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]:
    """
    topk_dot over the first n_packed keys of a buffer filled by pack_keys, then the rows of tail (ids n_packed..); k at most their number.
    """
def topk_rows(scores: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], k: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex = 0, labels: typing.Any = None) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]:
    """
    The k largest entries of every row, best first (ties: lower column; NaN as -inf): (scores, columns), or with labels (same shape), (scores, labels), entries labelled negative passed over and rows padded with (-FLT_MAX, -1).
    """
def unpack_keys(panels: numpy.ndarray, n: typing.SupportsInt | typing.SupportsIndex, d: typing.SupportsInt | typing.SupportsIndex) -> numpy.typing.NDArray[numpy.float32]:
    """
    The first n keys (a multiple of 64) of a panel buffer as rows (n, d).
    """
max_threads: int = 65536
