"""The label of every element of an ``AmortizedHNSW``'s graph, and the element of a label."""

from __future__ import annotations

import numpy as np

__all__ = ["Labels"]


class Labels:
    """Labels by element (int64, room for ``capacity``), and lookups the other way through a
    sorted copy made when first needed after a change: 16 bytes an element, where a hash map
    of Python integers takes about 100."""

    def __init__(self, capacity: int = 0):
        self._by_element = np.empty(capacity, np.int64)
        self.count = 0
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None  # (labels sorted, elements)

    @property
    def all(self) -> np.ndarray:
        """Every element's label (a view)."""
        return self._by_element[: self.count]

    def resize(self, capacity: int) -> None:
        grown = np.empty(max(capacity, self.count), np.int64)
        grown[: self.count] = self.all
        self._by_element = grown

    def elements(self, labels: np.ndarray) -> np.ndarray:
        """The element of each of ``labels`` (int64), -1 where none has it."""
        if self._sorted is None:
            order = np.argsort(self.all, kind="stable")
            self._sorted = self.all[order], order
        ordered, order = self._sorted
        labels = np.asarray(labels, np.int64)
        if len(ordered) == 0:
            return np.full(labels.shape, -1, np.int64)
        at = np.minimum(np.searchsorted(ordered, labels), len(ordered) - 1)
        return np.where(ordered[at] == labels, order[at], -1)

    def append(self, labels: np.ndarray) -> None:
        """Labels of the next elements (within the capacity)."""
        self._by_element[self.count : self.count + len(labels)] = labels
        self.count += len(labels)
        self._sorted = None

    def relabel(self, elements: np.ndarray, labels: np.ndarray) -> None:
        self._by_element[elements] = labels
        self._sorted = None
