"""Files of an amortized IVF index: ``save`` / ``load``, ``serialize`` / ``deserialize`` and
pickling, one zip archive holding faiss's serialized index, the learned parts and ``meta.json``."""

from __future__ import annotations

import io
import zipfile
from typing import TYPE_CHECKING

import faiss
import numpy as np

from .._held_out import FITTED_QUERIES, read_fingerprints
from .._io import (
    CALIBRATION_QUERIES,
    atomic_path,
    npy_bytes,
    read_archive,
    read_npy,
    write_archive,
)
from .._validation import as_matrix, as_positive_int
from ..routing import LOADERS, PredictedKeyRouter
from ..routing.ledger import AnswerLedger
from ..routing.network import load_torch_model
from ..xbox import XboxTransform
from .calibration import calibration_state, check_calibration
from .refine import as_raw_keys
from .state import AMORTIZED, IVFState

if TYPE_CHECKING:
    from .index import AmortizedIVFBase

__all__ = ["Files"]

_FORMAT = "amips_plugins.AmortizedIVF"  # read back by _io.read_archive
_VERSION = 1
_RAW_KEYS = "raw_keys.npy"  # an index that re-ranks: its raw keys, row i the key with id i
_MEMBERS = (
    "index.faiss",
    PredictedKeyRouter.member,
    *LOADERS,
    AnswerLedger.member,
    CALIBRATION_QUERIES,
    FITTED_QUERIES,
    _RAW_KEYS,
)


class Files(IVFState):
    """``save``, ``load``, ``serialize``, ``deserialize`` and pickling of
    ``AmortizedIVFBase``."""

    def save(self, path) -> None:
        """Write the faiss index, the Xbox state, the learned parts and the config to one file
        (a zip archive), atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            self._write_archive(f)

    def serialize(self) -> bytes:
        """What ``save`` writes, as bytes (``deserialize`` reads them back)."""
        buf = io.BytesIO()
        self._write_archive(buf)
        return buf.getvalue()

    def _write_archive(self, file) -> None:
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "d": self._d,
            "nprobe": self.nprobe,
            "xbox": None if self.xbox is None else self.xbox.state_dict(),
            "router": None if self._router is None else type(self._router).__name__,
            "probe_union": self.probe_union,
            "calibration": None if self._effort is None else calibration_state(self._effort),
            "calibration_depth": self._calibration_depth if self._effort is not None else None,
            "auto_recalibrate": self.auto_recalibrate,
            "k_factor": self.k_factor if self.refines else None,
        }
        if self._router_impl is not None and self._router_impl.member not in LOADERS:
            raise ValueError(
                f"{type(self._router).__name__} cannot be saved: amips_plugins.routing.LOADERS "
                f"has no reader for its member {self._router_impl.member!r}"
            )
        members = {}
        with self._lock.reading():
            self._note_changes_from_cpp()
            meta["stale"] = sorted(self._stale)
            # a calibration measured on other keys is measured again after loading
            meta["calibration_stale"] = (
                self._effort is not None and self._effort_version != self._keys_version
            )
            members["index.faiss"] = faiss.serialize_index(self).tobytes()
            for impl in (self._transform_impl, self._router_impl, self._ledger):
                if impl is not None:
                    members[impl.member] = impl.to_bytes()
            if self._calibration_queries is not None:
                members[CALIBRATION_QUERIES] = npy_bytes(self._calibration_queries)
            if self._router_queries is not None:
                members[FITTED_QUERIES] = npy_bytes(self._router_queries)
            if self.refines:
                members[_RAW_KEYS] = npy_bytes(self._raw_rows())
        write_archive(file, meta, members)

    @classmethod
    def load(cls, path) -> AmortizedIVFBase:
        """Read an index written by ``save``; a foreign, corrupt, inconsistent or newer file:
        ValueError. Sizes are checked before anything is allocated for them."""
        return cls._read(path, str(path))

    @classmethod
    def deserialize(cls, data) -> AmortizedIVFBase:
        """The index ``serialize`` gave as ``data`` (bytes); errors as for ``load``."""
        return cls._read(bytes(data), "the data")

    @classmethod
    def _read(cls, source, name: str) -> AmortizedIVFBase:
        meta, blobs = read_archive(source, "AmortizedIVF", _VERSION, _MEMBERS)
        try:
            index = faiss.deserialize_index(np.frombuffer(blobs["index.faiss"], np.uint8))
        except (KeyError, RuntimeError) as e:
            raise ValueError(
                f"{name} is not a readable AmortizedIVF file ({type(e).__name__}: {e})"
            ) from None
        try:
            d = check_payload(meta, index)
            self = cls._adopt(index)
            xbox = meta["xbox"]
            xbox = None if xbox is None else XboxTransform.from_state_dict(xbox)
            if (xbox is not None) != (index.d == d + 1):
                raise ValueError(
                    f"the faiss index has dimension {index.d} and the Xbox state is "
                    f"{'absent' if xbox is None else 'present'}, for d = {d}"
                )
            if xbox is not None and xbox.dim != d:
                raise ValueError(f"the Xbox state has dim {xbox.dim}, the index {d}")
            self.nprobe = meta["nprobe"]
            union = meta.get("probe_union")
            if not (union is None or isinstance(union, bool)):
                raise ValueError(f"probe_union must be true, false or null, got {union!r}")
            router = next((LOADERS[m](blobs[m]) for m in LOADERS if m in blobs), None)
            if (router is None) != (meta["router"] is None):
                held = "none" if router is None else type(router).__name__
                raise ValueError(f"meta.json names router {meta['router']!r:.40}, it holds {held}")
            query_transform = blobs.get(PredictedKeyRouter.member)
            self._init_learned(
                d,
                xbox,
                None if query_transform is None else load_torch_model(query_transform),
                router,
                union,
            )
            k_factor = meta.get("k_factor")
            if (k_factor is None) != (_RAW_KEYS not in blobs):
                raise ValueError("meta.json's k_factor and the raw keys come together")
            if k_factor is not None:
                self._keep_raw_keys(as_raw_keys(read_npy(blobs[_RAW_KEYS]), self), k_factor)
            self._read_upkeep(meta, blobs, d)
        except (KeyError, TypeError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{name} is an inconsistent AmortizedIVF file: {e}") from None
        return self

    def _read_upkeep(self, meta: dict, blobs: dict, d: int) -> None:
        """The calibration, the router's ledger and what is stale, from a file's ``meta`` and
        members (all optional: files of earlier versions hold none of them)."""
        calibration = meta.get("calibration")
        if calibration is not None:
            self._effort = check_calibration(calibration, self)
            depth = meta.get("calibration_depth")  # None: a file before it was kept
            deepest = max(int(table.efforts[-1]) for table in self._effort.values())
            self._calibration_depth = as_positive_int(
                deepest if depth is None else depth, "calibration_depth"
            )
            if self._calibration_depth > self.nlist:
                raise ValueError(f"calibration_depth {self._calibration_depth} > nlist")
            if meta.get("calibration_stale", False):
                self._effort_version = -1
        if CALIBRATION_QUERIES in blobs:
            queries = read_npy(blobs[CALIBRATION_QUERIES])
            self._calibration_queries = as_matrix(queries, "calibration queries", dim=d)
        if FITTED_QUERIES in blobs:
            self._router_queries = read_fingerprints(blobs[FITTED_QUERIES])
        if AnswerLedger.member in blobs:
            ledger = AnswerLedger.from_bytes(blobs[AnswerLedger.member])
            if ledger.queries.shape[1] != d or not hasattr(self._router_impl, "add_pieces"):
                raise ValueError("the answer ledger does not fit the index or its router")
            self._ledger = ledger
        stale = meta.get("stale", [])
        if not isinstance(stale, list) or not set(stale) <= {"router", "query_transform"}:
            raise ValueError(f"stale must list learned parts, got {stale!r:.80}")
        self._stale = set(stale)
        flag = meta.get("auto_recalibrate", True)
        if not isinstance(flag, bool):
            raise ValueError(f"auto_recalibrate must be true or false, got {flag!r:.40}")
        self.auto_recalibrate = flag

    # pickle and copy.deepcopy keep the learned parts (faiss's own pickling keeps the lists only)
    def __getstate__(self) -> dict:
        return {"archive": self.serialize()}

    def __setstate__(self, state: dict) -> None:
        loaded = type(self).deserialize(state["archive"])
        for name, value in vars(loaded).items():
            object.__setattr__(self, name, value)


def check_payload(meta: dict, index) -> int:
    """The key dimension that ``meta`` states, checked against the faiss ``index`` it came with."""
    if type(index) not in AMORTIZED:
        raise ValueError(f"the payload is a {type(index).__name__}, not a faiss IVF index")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError("the payload's faiss index does not use the inner-product metric")
    d = as_positive_int(meta["d"], "d")
    xbox_dims = (d, d + 1) if isinstance(index, faiss.IndexIVFFlat) else (d,)
    if index.d not in xbox_dims:
        raise ValueError(f"meta.json says d = {d}, the faiss index has dimension {index.d}")
    return d
