"""Files of an ``AmortizedHNSW``: ``save_index`` writes one zip archive (hnswlib's graph file,
the codes' ranges, the Xbox state, the query transform, the calibration and ``meta.json``);
``load_index`` reads it, or a plain hnswlib file, after checking the graph (see
``amips_plugins._hnsw_file``); pickling keeps the graph's arrays; ``.index`` is the graph as an
``hnswlib.Index``."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import hnswlib
import numpy as np

from .. import _core
from .._held_out import FITTED_QUERIES, read_fingerprints
from .._hnsw_file import read_graph, write_graph
from .._io import (
    CALIBRATION_QUERIES,
    atomic_path,
    npy_bytes,
    read_archive,
    read_npy,
    scratch_path,
    write_archive,
)
from .._validation import as_int64, as_matrix, as_positive_int
from ..effort import DirectionGroups, EffortTable
from ..xbox import XboxTransform
from .basis import walk_basis, walk_dims_for
from .state import CONSTRUCTIONS, HNSWError, HNSWState

__all__ = ["Files"]

_FORMAT = "amips_plugins.AmortizedHNSW"  # read back by _io.read_archive
_VERSION = 1


_CODE_RANGES = "code_ranges.npy"  # (2, r): the codes' lows and steps
_WALK_BASIS = "walk_basis.npy"  # (r, stored dim): where walk_dims set one


class Files(HNSWState):
    """``save_index``, ``load_index``, pickling and ``.index``."""

    @property
    def index(self) -> hnswlib.Index:
        """An ``hnswlib.Index`` of this graph, made on each call: a copy, for code that needs
        hnswlib's object (its exact-score search, say); changes to it are not seen here."""
        graph = self._require_ready()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "graph.bin")
            with self._graph_lock.reading(), open(path, "wb") as f:
                write_graph(f, graph, self._labels.all, self._max_elements, self._ef_construction)
            index = hnswlib.Index(space="ip", dim=self._stored_dim)
            index.load_index(path, allow_replace_deleted=self._allow_replace_deleted)
        index.set_ef(self._ef)
        index.set_num_threads(self.num_threads)  # type: ignore[attr-defined]
        return index

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # type: ignore[misc]
        graph = state["_graph"]
        if graph is not None:  # the core's graph pickles as its arrays
            arrays = graph.arrays() if graph.size else None
            state["_graph"] = {"dim": graph.dim, "max_m": graph.max_m, "arrays": arrays}
        return state

    def __setstate__(self, state: dict) -> None:
        state = {"walk_dims": 0, **state}  # pickles before walk_dims walked every dimension
        saved = state["_graph"]
        if saved is not None:
            arrays = saved["arrays"]
            graph = (
                _core.GraphSearch(saved["dim"], saved["max_m"])
                if arrays is None
                else _core.GraphSearch(**arrays)
            )
            graph.reserve(state["_max_elements"])
            state = {**state, "_graph": graph}
        super().__setstate__(state)  # type: ignore[misc]

    def save_index(self, path) -> None:
        """Write the hnswlib graph, the Xbox state, the query transform and the config to one file
        (a zip archive), atomically."""
        graph = self._require_ready()
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "dim": self.dim,
            "construction": self.construction,
            "sort_batches": self.sort_batches,
            "fill_lists": self.fill_lists,
            "candidates": self.candidates,
            "walk_dims": self.walk_dims,
            "ef": self._ef,
            "random_seed": self._random_seed,
            "allow_replace_deleted": bool(self._allow_replace_deleted),
            "xbox": None if self.xbox is None else self.xbox.state_dict(),
            "calibration": None if self._effort is None else self._effort.state_dict(),
            "calibration_max_ef": self._calibration_max_ef,
            "auto_recalibrate": self.auto_recalibrate,
        }
        with atomic_path(path) as out, scratch_path(path, "graph") as graph_file:
            members: dict[str, bytes | Path] = {"graph.bin": graph_file}
            with self._graph_lock.reading():
                with open(graph_file, "wb") as f:
                    write_graph(
                        f, graph, self._labels.all, self._max_elements, self._ef_construction
                    )
                if graph.size:
                    members[_CODE_RANGES] = npy_bytes(graph.code_ranges)
                    if graph.basis is not None:
                        members[_WALK_BASIS] = npy_bytes(graph.basis)
                meta["stale"] = sorted(self._stale)
                # a calibration measured on other keys is measured again after loading
                meta["calibration_stale"] = (
                    self._effort is not None and self._effort_version != self._keys_version
                )
            if self._query_transform is not None:
                members["query_transform.pt"] = self._query_transform.to_bytes()
            if self._calibration_queries is not None:
                members[CALIBRATION_QUERIES] = npy_bytes(self._calibration_queries)
            if self._edge_queries is not None:
                members[FITTED_QUERIES] = npy_bytes(self._edge_queries)
            write_archive(out, meta, members)

    def load_index(self, path, max_elements: int = 0, allow_replace_deleted: bool = False) -> None:
        """Restore an index written by ``save_index``, or a plain hnswlib file written by
        ``hnswlib.Index.save_index`` (space 'ip', this ``dim``), into this object. The graph is
        checked before hnswlib reads it (see ``_hnsw_file``); a foreign, corrupt or
        inconsistent file raises ``HNSWError``. ``allow_replace_deleted`` as in hnswlib (a
        saved AmortizedHNSW also keeps the setting it was built with)."""
        max_elements = int(as_int64(np.atleast_1d(max_elements), "max_elements", ndim=1)[0])
        try:
            ours = zipfile.is_zipfile(path)
            if ours:
                meta, blobs = read_archive(
                    path,
                    "AmortizedHNSW",
                    _VERSION,
                    (
                        "graph.bin",
                        _CODE_RANGES,
                        _WALK_BASIS,
                        "query_transform.pt",
                        CALIBRATION_QUERIES,
                        FITTED_QUERIES,
                    ),
                )
                graph, transform = blobs["graph.bin"], blobs.get("query_transform.pt")
                ranges = None if _CODE_RANGES not in blobs else read_npy(blobs[_CODE_RANGES])
                basis = None if _WALK_BASIS not in blobs else read_npy(blobs[_WALK_BASIS])
                config = self._check_meta(meta)
                calibration = meta.get("calibration")
                effort = (
                    None
                    if calibration is None
                    else EffortTable.from_state_dict(calibration, self.dim)
                )
                if effort is not None and not isinstance(effort.groups, DirectionGroups):
                    raise ValueError("the calibration must group queries by direction")
                state = meta["xbox"]
                xbox = None if state is None else XboxTransform.from_state_dict(state)
                if xbox is not None and xbox.dim != self.dim:
                    raise ValueError(f"the Xbox state has dim {xbox.dim}, the index {self.dim}")
                kept = blobs.get(CALIBRATION_QUERIES)
                calibration_queries = (
                    None if kept is None else as_matrix(read_npy(kept), "calibration queries")
                )
                if calibration_queries is not None and calibration_queries.shape[1] != self.dim:
                    raise ValueError("the calibration queries do not have the index's dim")
                fitted = blobs.get(FITTED_QUERIES)
                edge_queries = None if fitted is None else read_fingerprints(fitted)
            else:  # hnswlib's own format: the graph alone
                with open(path, "rb") as f:
                    graph, transform, xbox, effort = f.read(), None, None, None
                calibration_queries = ranges = basis = edge_queries = None
                config = {
                    "construction": "ip",
                    "sort_batches": self.sort_batches,
                    "fill_lists": self.fill_lists,
                    "candidates": self.candidates,
                    "walk_dims": self.walk_dims,
                    "allow_replace_deleted": False,
                    "ef": 10,
                    "random_seed": 100,
                    "calibration_max_ef": 1000,
                    "calibration_stale": False,
                    "stale": [],
                    "auto_recalibrate": True,
                }
            allow = config["allow_replace_deleted"] or bool(allow_replace_deleted)
            stored_dim = self.dim + (xbox is not None)
            content = read_graph(graph, stored_dim)
            del graph
            if max_elements < len(content.labels):  # as hnswlib: the file's capacity
                max_elements = content.max_elements
            core = _core.GraphSearch(stored_dim, content.M)
            if content.arrays is not None:
                if not ours:  # hnswlib's graph: a basis fitted on its keys, as adds would
                    basis = walk_basis(content.arrays["keys"], config["walk_dims"])
                if basis is not None:
                    basis = np.asarray(basis, np.float32)
                    if basis.shape != (config["walk_dims"], stored_dim):
                        raise ValueError(f"the walk's basis has shape {basis.shape}")
                    content.arrays["basis"] = basis
                if ranges is not None:
                    ranges = np.asarray(ranges, np.float32)
                    if ranges.shape != (2, stored_dim if basis is None else len(basis)):
                        raise ValueError(f"the codes' ranges have shape {ranges.shape}")
                    content.arrays.update(code_low=ranges[0], code_scale=ranges[1])
                core = _core.GraphSearch(**content.arrays)
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
            self.xbox, self.construction = xbox, config["construction"]
            self.sort_batches, self.candidates = config["sort_batches"], config["candidates"]
            self.fill_lists, self.walk_dims = config["fill_lists"], config["walk_dims"]
            self._max_elements, self._M = max_elements, content.M
            self._ef_construction, self._random_seed = (
                content.ef_construction,
                config["random_seed"],
            )
            self._ef, self._allow_replace_deleted = config["ef"], allow
            deleted = np.zeros(0, np.uint8) if content.arrays is None else content.arrays["deleted"]
            self._install_graph(core, content.labels, deleted)
            self.query_transform = model
            self._effort = effort
            self._keys_version += 1  # other keys: other learned parts, as the file says
            self._effort_version = self._keys_version - config["calibration_stale"]
            self._calibration_queries = calibration_queries
            self._edge_queries = edge_queries
            self._calibration_max_ef = config["calibration_max_ef"]
            self._stale = set(config["stale"])
            self.auto_recalibrate = config["auto_recalibrate"]

    def _check_meta(self, meta: dict) -> dict:
        if meta["dim"] != self.dim:
            raise ValueError(f"an index of dim {meta['dim']}, this one has dim {self.dim}")
        if meta["construction"] not in CONSTRUCTIONS or (
            (meta["construction"] == "xbox") != (meta["xbox"] is not None)
        ):
            raise ValueError(
                f"construction {meta['construction']!r} with xbox {meta['xbox']!r:.80}"
            )
        # files before fill_lists hold graphs built without it
        names = ("sort_batches", "fill_lists", "allow_replace_deleted", "calibration_stale")
        flags = {name: meta.get(name, False) for name in names}
        flags["auto_recalibrate"] = meta.get("auto_recalibrate", True)
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ValueError(f"{', '.join(flags)} must be booleans: {flags}")
        stale = meta.get("stale", [])
        if not isinstance(stale, list) or not set(stale) <= {"query_transform"}:
            raise ValueError(f"stale must list learned parts, got {stale!r:.80}")
        max_ef = meta.get("calibration_max_ef", 1000)
        seed = meta.get("random_seed", 100)
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"random_seed must be a non-negative integer, got {seed!r:.80}")
        return {
            "random_seed": seed,
            **flags,
            "construction": meta["construction"],
            "candidates": as_positive_int(meta["candidates"], "candidates"),
            # files before walk_dims hold graphs with codes of every dimension
            "walk_dims": walk_dims_for(
                meta["dim"] + (meta["xbox"] is not None), meta.get("walk_dims", 0)
            ),
            "ef": as_positive_int(meta["ef"], "ef"),
            "calibration_max_ef": as_positive_int(max_ef, "calibration_max_ef"),
            "stale": stale,
        }
