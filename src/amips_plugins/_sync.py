"""A read-write lock: searches share an index, and whatever replaces or frees its storage (reset,
resize, load) waits for them and keeps new ones out until it is done."""

from __future__ import annotations

import threading
from contextlib import contextmanager

__all__ = ["ReadWriteLock", "PicklesWithoutTransients"]


class ReadWriteLock:
    """Many readers or one writer. A waiting writer holds back new readers, so a stream of
    searches cannot starve it. Not reentrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._read = _Reading(self)

    def reading(self) -> _Reading:
        """A context in which to read; one object serves every reader (its state is the lock's):
        a generator-based context cost a one-query search about a microsecond more."""
        return self._read

    @contextmanager
    def writing(self):
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class _Reading:
    """``ReadWriteLock.reading``'s context."""

    __slots__ = ("_lock",)

    def __init__(self, lock: ReadWriteLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        lock = self._lock
        with lock._cond:
            while lock._writing or lock._writers_waiting:
                lock._cond.wait()
            lock._readers += 1

    def __exit__(self, *exc) -> None:
        lock = self._lock
        with lock._cond:
            lock._readers -= 1
            if lock._readers == 0 and lock._writers_waiting:  # readers wait only for writers
                lock._cond.notify_all()


class PicklesWithoutTransients:
    """Pickling for a class whose instances hold locks or caches: the attributes named in
    ``_TRANSIENT`` (name -> factory) are left out of the state and made anew when it is
    restored."""

    _TRANSIENT: dict = {}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        for name, make in self._TRANSIENT.items():
            setattr(self, name, make())
