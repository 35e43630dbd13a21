"""The label of every element of an ``AmortizedHNSW``'s graph, and the element of a label."""

from __future__ import annotations

import numpy as np

from .._lookup import look_up

__all__ = ["Labels"]


class Labels:
    """Labels by element (int64, room for ``capacity``), and lookups the other way: 16 bytes an
    element, where a hash map of Python integers takes about 100.

    A lookup reads a sorted copy of the labels of the first elements and sorts the few added
    since; the copy is made again once they are many (``_RECENT``), so that adding one label at a
    time costs a sort of the recent ones, not of all."""

    _RECENT = 4096

    def __init__(self, capacity: int = 0):
        self._by_element = np.empty(capacity, np.int64)
        self.count = 0
        self._sorted = np.empty(0, np.int64), np.empty(0, np.int64)  # labels sorted, elements
        self._sorted_count = 0  # the elements the sorted copy covers: 0 .. _sorted_count - 1

    @property
    def all(self) -> np.ndarray:
        """Every element's label (a view)."""
        return self._by_element[: self.count]

    def resize(self, capacity: int) -> None:
        grown = np.empty(max(capacity, self.count), np.int64)
        grown[: self.count] = self.all
        self._by_element = grown

    def elements(self, labels) -> np.ndarray:
        """The element of each of ``labels`` (int64), -1 where none has it."""
        labels = np.asarray(labels, np.int64)
        if self.count - self._sorted_count > self._RECENT:
            order = np.argsort(self.all, kind="stable")
            self._sorted, self._sorted_count = (self.all[order], order), self.count
        found = look_up(*self._sorted, labels)
        recent = self._by_element[self._sorted_count : self.count]
        if len(recent):
            order = np.argsort(recent, kind="stable")
            in_recent = look_up(recent[order], order + self._sorted_count, labels)
            found = np.where(in_recent >= 0, in_recent, found)
        return found

    def append(self, labels: np.ndarray) -> None:
        """Labels of the next elements (within the capacity)."""
        self._by_element[self.count : self.count + len(labels)] = labels
        self.count += len(labels)

    def relabel(self, elements: np.ndarray, labels: np.ndarray) -> None:
        self._by_element[elements] = labels
        self._sorted, self._sorted_count = (np.empty(0, np.int64),) * 2, 0
