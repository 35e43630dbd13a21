"""hnswlib's settings and read-only views of an ``AmortizedHNSW``: threads, ef, sizes, the
labels, the stored vectors, and the graph as an ``hnswlib.Index``."""

from __future__ import annotations

import numpy as np

from .. import _core
from .._hnsw_file import file_size
from .._validation import MAX_THREADS, as_int64, as_positive_int
from .state import HNSWError, HNSWState

__all__ = ["Settings"]


class Settings(HNSWState):
    """``num_threads``, ``set_ef`` / ``ef``, ``M``, ``ef_construction``, ``max_elements``,
    ``element_count``, ``get_current_count``, ``get_max_elements``, ``get_ids_list``,
    ``get_items`` and ``index_file_size``, as hnswlib has them."""

    @property
    def num_threads(self) -> int:
        """Threads a call with ``num_threads=-1`` uses (hnswlib's default: all cores)."""
        return self._num_threads or _core.default_num_threads()

    @num_threads.setter
    def num_threads(self, value: int) -> None:
        self.set_num_threads(value)

    def set_num_threads(self, num_threads: int) -> None:
        """Threads for calls with ``num_threads=-1``; 0 or less: all cores, as in hnswlib."""
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
            raise TypeError(f"num_threads must be an integer, got {num_threads!r}")
        if num_threads > MAX_THREADS:
            raise HNSWError(f"num_threads must be at most {MAX_THREADS}, got {num_threads}")
        self._num_threads = max(int(num_threads), 0)

    def index_file_size(self) -> int:
        """Bytes of the graph in hnswlib's file (``save_index`` adds the config)."""
        graph = self._require_ready()
        with self._graph_lock.reading():
            return file_size(graph)

    def set_ef(self, ef: int) -> None:
        ef = as_positive_int(ef, "ef")
        self._require_ready()
        self._ef = ef

    @property
    def ef(self) -> int:
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        self.set_ef(value)

    @property
    def M(self) -> int:
        return self._M

    @property
    def ef_construction(self) -> int:
        return self._ef_construction

    @property
    def max_elements(self) -> int:
        return self._max_elements

    @property
    def element_count(self) -> int:
        return 0 if self._graph is None else self._graph.size

    def get_current_count(self) -> int:
        return self._require_ready().size

    def get_max_elements(self) -> int:
        self._require_ready()
        return self._max_elements

    def get_ids_list(self) -> list[int]:
        """Every label, deleted ones too (as in hnswlib)."""
        self._require_ready()
        with self._graph_lock.reading():
            return self._labels.all.tolist()

    def get_items(self, ids=None, return_type: str = "numpy"):
        """The original (not augmented) vectors of ``ids`` (a sequence; default: every label, in
        label order): (n, dim) float32, or with ``return_type="list"`` a list of lists."""
        if return_type not in ("numpy", "list"):
            raise HNSWError(f"return_type must be 'numpy' or 'list', got {return_type!r}")
        items = self._get_items(ids)
        return items.tolist() if return_type == "list" else items

    def _get_items(self, ids) -> np.ndarray:
        graph = self._require_ready()
        with self._graph_lock.reading():
            if ids is None:  # in label order: the same for every copy of the index
                ids = np.sort(self._labels.all)
            if np.ndim(ids) == 0:  # as in hnswlib
                raise HNSWError(f"ids must be a sequence of labels, got {ids!r}")
            labels = as_int64(np.reshape(ids, -1), "ids", ndim=1)  # knn_query's (n, k) too
            if len(labels) == 0:
                return np.empty((0, self.dim), np.float32)
            return graph.keys(self._elements(labels))[:, : self.dim]
