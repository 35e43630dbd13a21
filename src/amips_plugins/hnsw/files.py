"""Files of an ``AmortizedHNSW``: ``save_index`` writes one zip archive (hnswlib's graph file,
the Xbox state, the query transform, the calibration and ``meta.json``); ``load_index`` reads it,
or a plain hnswlib file, after checking the graph (see ``amips_plugins._hnsw_file``)."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import hnswlib
import numpy as np

from .._hnsw_file import check_graph
from .._io import atomic_path, read_archive, scratch_path
from .._validation import as_int64, as_positive_int
from ..effort import EffortTable
from ..xbox import XboxTransform
from .state import CONSTRUCTIONS, HNSWError, HNSWState

__all__ = ["Files"]

_FORMAT = "amips_plugins.AmortizedHNSW"  # read back by _io.read_archive
_VERSION = 1


def _read_graph(graph: bytes, dim: int, max_elements: int, allow_replace_deleted: bool):
    """An hnswlib 'ip' index read from the bytes of its file, checked first (see
    ``_hnsw_file``), and the labels it marks deleted."""
    info = check_graph(graph, dim)
    index = hnswlib.Index(space="ip", dim=dim)
    with tempfile.TemporaryDirectory() as tmp:  # the file's own folder may be read-only
        copy = os.path.join(tmp, "graph.bin")
        with open(copy, "wb") as f:
            f.write(graph)
        index.load_index(
            copy, max_elements=max_elements, allow_replace_deleted=allow_replace_deleted
        )
    return index, set(info.deleted_labels)


class Files(HNSWState):
    """``save_index`` and ``load_index``."""

    def save_index(self, path) -> None:
        """Write the hnswlib graph, the Xbox state, the query transform and the config to one file
        (a zip archive), atomically."""
        self._require_ready()
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "dim": self.dim,
            "construction": self.construction,
            "sort_batches": self.sort_batches,
            "candidates": self.candidates,
            "ef": self.index.ef,
            "allow_replace_deleted": bool(self._allow_replace_deleted),
            "xbox": None if self.xbox is None else self.xbox.state_dict(),
            "calibration": None if self._effort is None else self._effort.state_dict(),
        }
        with atomic_path(path) as out, scratch_path(path, "graph") as graph:
            with self._add_lock, self._graph_lock.reading():
                self.index.save_index(str(graph))
            with zipfile.ZipFile(out, "w") as z:
                z.writestr("meta.json", json.dumps(meta))
                z.write(graph, "graph.bin")
                if self._query_transform is not None:
                    z.writestr("query_transform.pt", self._query_transform.to_bytes())

    def load_index(self, path, max_elements: int = 0, allow_replace_deleted: bool = False) -> None:
        """Restore an index written by ``save_index``, or a plain hnswlib file written by
        ``hnswlib.Index.save_index`` (space 'ip', this ``dim``), into this object. The graph is
        checked before hnswlib reads it (see ``_hnsw_file``); a foreign, corrupt or
        inconsistent file raises ``HNSWError``. ``allow_replace_deleted`` as in hnswlib (a
        saved AmortizedHNSW also keeps the setting it was built with)."""
        max_elements = int(as_int64(np.atleast_1d(max_elements), "max_elements", ndim=1)[0])
        try:
            if zipfile.is_zipfile(path):
                meta, blobs = read_archive(
                    path, "AmortizedHNSW", _VERSION, ("graph.bin", "query_transform.pt")
                )
                graph, transform = blobs["graph.bin"], blobs.get("query_transform.pt")
                config = self._check_meta(meta)
                calibration = meta.get("calibration")
                effort = (
                    None
                    if calibration is None
                    else EffortTable.from_state_dict(calibration, self.dim)
                )
                state = meta["xbox"]
                xbox = None if state is None else XboxTransform.from_state_dict(state)
                if xbox is not None and xbox.dim != self.dim:
                    raise ValueError(f"the Xbox state has dim {xbox.dim}, the index {self.dim}")
            else:  # hnswlib's own format: the graph alone
                with open(path, "rb") as f:
                    graph, transform, xbox, effort = f.read(), None, None, None
                config = {
                    "construction": "ip",
                    "sort_batches": self.sort_batches,
                    "candidates": self.candidates,
                    "allow_replace_deleted": False,
                    "ef": None,
                }
            allow = config["allow_replace_deleted"] or bool(allow_replace_deleted)
            index, deleted = _read_graph(graph, self.dim + (xbox is not None), max_elements, allow)
            del graph
            if config["ef"] is not None:
                index.set_ef(config["ef"])
        except (
            OSError,
            zipfile.BadZipFile,
            KeyError,
            TypeError,
            ValueError,
            RuntimeError,
        ) as e:
            raise HNSWError(
                f"{path} is not a readable AmortizedHNSW or hnswlib file ({type(e).__name__}: {e})"
            ) from None
        model = None
        if transform is not None:
            from ..learn.models import load_model

            model = load_model(transform)
        with self._graph_lock.writing():
            self.index, self.xbox, self.construction = index, xbox, config["construction"]
            self.sort_batches, self.candidates = config["sort_batches"], config["candidates"]
            self._deleted, self._ready, self._walker = deleted, True, None
            self._allow_replace_deleted = allow
            self.query_transform = model
            self._effort = effort

    def _check_meta(self, meta: dict) -> dict:
        if meta["dim"] != self.dim:
            raise ValueError(f"an index of dim {meta['dim']}, this one has dim {self.dim}")
        if meta["construction"] not in CONSTRUCTIONS or (
            (meta["construction"] == "xbox") != (meta["xbox"] is not None)
        ):
            raise ValueError(
                f"construction {meta['construction']!r} with xbox {meta['xbox']!r:.80}"
            )
        flags = {name: meta.get(name, False) for name in ("sort_batches", "allow_replace_deleted")}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ValueError(f"sort_batches and allow_replace_deleted must be booleans: {flags}")
        return {
            **flags,
            "construction": meta["construction"],
            "candidates": as_positive_int(meta["candidates"], "candidates"),
            "ef": as_positive_int(meta["ef"], "ef"),
        }
