"""ShardedIVF: an inverted-file index spread over Ray actors, whose router sends each query
only to the shards that hold the lists it probes.

The driver (this object) holds the trained coarse quantizer and the learned router, both small;
the keys live in the shards, one ``amips_plugins.AmortizedIVF`` (any faiss IVF index) per
actor. With ``placement="lists"`` every list lives on one shard, lists with nearby centroids
together, so the lists a query probes tend to share a shard; with ``placement="keys"`` the keys
are dealt out by id and every list is spread over every shard, the usual scatter-gather in which
every query goes to every shard.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import faiss
import numpy as np

from .._io import atomic_path
from .._validation import as_k, as_key_ids, as_matrix, as_positive_int
from ..exact import topk_rows
from ..ivf import AmortizedIVF, AmortizedIVFBase, NotTrainedError
from ..routing import MaxAffineRouter, most_winning_keys
from .actors import ShardActors, ShardUnavailableError
from .placement import group_lists, lists_on_first_shards

__all__ = ["ShardedIVF", "ShardUnavailableError"]

_FORMAT = "amips_plugins.ShardedIVF"
_VERSION = 1
_PLACEMENTS = ("lists", "keys")


class ShardedIVF:
    """An IVF index (inner product) over ``num_shards`` Ray actors.

    Parameters
    ----------
    d, nlist : dimension of keys and queries, number of inverted lists
    num_shards : number of actors holding the keys
    codes : how the lists store keys, as the part of a faiss factory string after ``IVF{nlist},``
        (``"Flat"``, ``"PQ32x8"``, ``"SQ8"``, ...); shards of compressed codes also keep the raw
        keys they hold, for exact answers and the router's pieces
    placement : ``"lists"`` (each list on one shard; a query contacts only its lists' shards) or
        ``"keys"`` (keys dealt out by id; every query contacts every shard)
    nprobe : lists probed per query (also settable per call)
    shard_threads : threads each actor searches with
    actor_options : passed to Ray's ``.options()`` for every actor (e.g. ``{"num_cpus": 4}`` to
        place one shard per 4 cores of a cluster); by default an actor reserves no core, so any
        number of shards can share a machine
    timeout_s : how long a call waits for a shard before it counts as unreachable (None: forever)

    Notes
    -----
    Runs on the Ray cluster the caller has initialised (``ray.init(...)``), or starts a local one.
    ``train``, ``add``, ``fit_router``, ``search``, ``nprobe``, ``ntotal`` behave as for
    ``amips_plugins.AmortizedIVF``; ``last_search_stats`` says how many shards each query
    contacted. ``save(directory)`` writes one file per shard beside the router; each actor writes
    its own, so on a cluster the directory must be one every node reaches.
    """

    def __init__(
        self,
        d: int,
        nlist: int,
        num_shards: int,
        *,
        codes: str = "Flat",
        placement: str = "lists",
        nprobe: int = 1,
        shard_threads: int = 1,
        actor_options: dict | None = None,
        timeout_s: float | None = None,
    ):
        self.d = as_positive_int(d, "d")
        self.nlist = as_positive_int(nlist, "nlist")
        self.num_shards = as_positive_int(num_shards, "num_shards")
        if placement not in _PLACEMENTS:
            raise ValueError(f"placement must be one of {_PLACEMENTS}, got {placement!r}")
        if placement == "lists" and self.num_shards > self.nlist:
            raise ValueError(f"{num_shards} shards cannot each hold some of {nlist} lists")
        self.codes, self.placement = codes, placement
        self.nprobe = as_positive_int(nprobe, "nprobe")
        self.max_shards: int | None = None  # shards a query may contact (placement "lists")
        self.shard_threads = as_positive_int(shard_threads, "shard_threads")
        self.actor_options = dict(actor_options or {})
        # the trained quantizer and the router; its lists stay empty
        self._router_index = AmortizedIVF.from_factory(self.d, f"IVF{self.nlist},{codes}")
        self.shard_of_list: np.ndarray | None = None  # with placement "lists", after train
        self._shards = ShardActors(self.actor_options, None, self.shard_threads)
        self.timeout_s = timeout_s
        self.ntotal = 0
        self.last_search_stats: dict = {}

    @property
    def timeout_s(self) -> float | None:
        """Seconds a call waits for a shard before it counts as unreachable (None: forever)."""
        return self._shards.timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float | None) -> None:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise TypeError(f"timeout_s must be a number of seconds or None, got {value!r}")
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"timeout_s must be positive and finite, got {value}")
        self._shards.timeout_s = None if value is None else float(value)

    # --- building -----------------------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        return bool(self._shards)

    @property
    def router(self):
        """The learned router (a ``MaxAffineRouter``), or None: faiss's centroids."""
        return self._router_index.router

    @property
    def routing_index(self) -> AmortizedIVFBase:
        """What chooses each query's lists: an AmortizedIVF with the trained quantizer and the
        router, and empty lists."""
        return self._router_index

    def train(self, x) -> None:
        """Train the coarse quantizer (and codes) on ``x`` (n >= nlist, d), once, on the driver;
        then group the lists into shards by their centroids and sizes in ``x``, and start the
        actors."""
        if self.ntotal:
            raise ValueError("the index holds keys: train before adding")
        x = as_matrix(x, "x", dim=self.d, allow_empty=False)
        self._router_index.train(x)
        if self.placement == "lists":
            centroids = self._router_index.quantizer.reconstruct_n(0, self.nlist)
            assigned = self._router_index.quantizer.assign(x, 1)[:, 0]
            sizes = np.bincount(assigned, minlength=self.nlist)
            self.shard_of_list = group_lists(centroids, sizes, self.num_shards)
        empty = self._router_index.serialize()
        self._shards.start([empty] * self.num_shards)

    def add(self, x) -> None:
        """Add keys ``x`` (n, d) with ids ntotal .. ntotal + n - 1."""
        x = as_matrix(x, "x", dim=self.d)
        self.add_with_ids(x, np.arange(self.ntotal, self.ntotal + len(x)))

    def add_with_ids(self, x, ids) -> None:
        """Add keys ``x`` (n, d) with new, non-negative ``ids`` (n,), each to its list's shard;
        all or nothing: a shard out of reach raises ShardUnavailableError once the others have
        removed the keys of ``ids`` again, and ``ntotal`` stays."""
        x = as_matrix(x, "x", dim=self.d)
        ids = as_key_ids(ids, len(x))
        self._require_trained()
        if self.shard_of_list is not None:
            shard = self.shard_of_list[self._router_index.quantizer.assign(x, 1)[:, 0]]
        else:
            shard = ids % self.num_shards
        self._shards.add({s: (x[shard == s], ids[shard == s]) for s in np.unique(shard).tolist()})
        self.ntotal += len(x)

    def fit_router(self, train_queries, *, num_pieces: int | None = None) -> None:
        """Learn which lists (hence shards) to probe: a ``MaxAffineRouter`` of the list
        means plus the ``num_pieces`` (default ``16 * nlist``) keys that are the exact answer of
        the most ``train_queries``. The answers are found shard by shard and reduced here; only
        the lists' sums and the winning keys come to the driver."""
        q = as_matrix(train_queries, "train_queries", dim=self.d, allow_empty=False)
        if self.ntotal == 0:
            raise ValueError("add keys to the index before fitting its router")
        pieces = (
            16 * self.nlist if num_pieces is None else as_positive_int(num_pieces, "num_pieces")
        )
        _, best = self.exact_search(q, 1)
        winners = np.unique(best[:, 0])
        found = self._shards.gather(self._shards.broadcast("keys_of", winners), "fit_router")
        ids, keys, lists = (np.concatenate([f[i] for f in found.values()]) for i in range(3))
        order = np.argsort(ids)
        ids, keys, lists = ids[order], keys[order], lists[order]
        chosen = most_winning_keys(keys, np.searchsorted(ids, best[:, 0]), pieces)
        parts = self._shards.gather(self._shards.broadcast("list_sums"), "fit_router").values()
        sums = np.asarray(np.stack([p[0] for p in parts]).sum(axis=0), np.float32)
        sizes = np.asarray(np.stack([p[1] for p in parts]).sum(axis=0), np.int64)
        means = np.zeros(sums.shape, np.float32)
        means[sizes > 0] = sums[sizes > 0] / sizes[sizes > 0, None]
        self._router_index.router = MaxAffineRouter.from_parts(
            means, sizes, keys[chosen], lists[chosen]
        )

    # --- searching ----------------------------------------------------------------------------
    def exact_search(self, x, k: int):
        """The exact top-k of every query over all keys, every shard searching its own: (D, I)."""
        q = as_matrix(x, "x", dim=self.d)
        k = as_k(k, self.ntotal, len(q), pad=True)
        self._require_trained()
        found = self._shards.gather(self._shards.broadcast("exact_topk", q, k), "exact_search")
        return _merge(len(q), k, [(np.arange(len(q)), f) for f in found.values()])

    def probed_lists(self, x, *, nprobe: int | None = None, max_shards: int | None = None):
        """The lists ``search`` probes for each query of ``x`` (n, d): (n, nprobe) int64,
        best first, -1 where fewer are chosen.

        With ``max_shards`` (placement "lists"), the shards are ranked by the best of their lists
        (the support function of a shard's keys is the max over its lists') and only the query's
        first ``max_shards`` are contacted: the lists probed are the ``nprobe`` best of theirs.
        """
        q = as_matrix(x, "x", dim=self.d)
        self._require_trained()
        return self._probed_lists(q, *self._effort(nprobe, max_shards))

    def _effort(self, nprobe, max_shards) -> tuple[int, int | None]:
        nprobe = min(
            self.nprobe if nprobe is None else as_positive_int(nprobe, "nprobe"), self.nlist
        )
        max_shards = self.max_shards if max_shards is None else max_shards
        if max_shards is not None:
            if self.shard_of_list is None:
                raise ValueError('max_shards needs placement="lists"')
            max_shards = as_positive_int(max_shards, "max_shards")
        return min(nprobe, self.nlist), max_shards

    def _probed_lists(self, q: np.ndarray, nprobe: int, max_shards: int | None) -> np.ndarray:
        if max_shards is None or max_shards >= self.num_shards:
            return self._router_index.probed_lists(
                q, params=faiss.SearchParametersIVF(nprobe=nprobe)
            )
        # rank enough lists that the first shards' share of them usually covers nprobe
        depth = min(self.nlist, nprobe * -(-self.num_shards // max_shards))
        ranked = self._router_index.probed_lists(q, params=faiss.SearchParametersIVF(nprobe=depth))
        assert self.shard_of_list is not None  # checked by _effort
        return lists_on_first_shards(
            ranked, self.shard_of_list, self.num_shards, nprobe, max_shards
        )

    def search(
        self,
        x,
        k: int,
        *,
        nprobe: int | None = None,
        max_shards: int | None = None,
        allow_partial: bool = False,
    ):
        """Top-k keys of every query of ``x`` (n, d) by inner product in its ``nprobe`` lists
        (default: ``self.nprobe``), each query sent only to the shards holding them; with
        ``max_shards`` (default: ``self.max_shards``), to at most that many (see
        ``probed_lists``).

        Returns ``(D, I)`` as ``AmortizedIVF.search``: the same results as one AmortizedIVF
        probing the same lists. A shard that is dead or does not answer within ``timeout_s``
        raises ``ShardUnavailableError``; with ``allow_partial`` the other shards' results
        are returned and ``last_search_stats["partial_queries"]`` counts the queries that lost
        one of their shards.
        """
        q = as_matrix(x, "x", dim=self.d)
        k = as_k(k, self.ntotal, len(q), pad=True)
        self._require_trained()
        effort = self._effort(nprobe, max_shards)
        start = time.perf_counter()
        lists = self._probed_lists(q, *effort)
        if self.shard_of_list is None:  # every list on every shard
            rows_of = {s: np.arange(len(q)) for s in range(self.num_shards)}
            lists_of = {s: lists for s in range(self.num_shards)}
        else:
            owner = np.where(lists >= 0, self.shard_of_list[lists], -1)
            rows_of, lists_of = {}, {}
            for s in np.unique(owner[owner >= 0]).tolist():
                mine = owner == s
                rows_of[s] = np.flatnonzero(mine.any(axis=1))
                lists_of[s] = np.where(mine, lists, -1)[rows_of[s]]
        routed = time.perf_counter()
        calls = {
            s: self._shards[s].search_lists.remote(q[rows], k, lists_of[s])
            for s, rows in rows_of.items()
        }
        found = self._shards.gather(calls, "search", allow_partial)
        scanned = time.perf_counter()
        D, I = _merge(len(q), k, [(rows_of[s], found[s][:2]) for s in found])
        end = time.perf_counter()
        missing = sorted(set(calls) - set(found))
        lost = np.zeros(len(q), bool)
        for s in missing:
            lost[rows_of[s]] = True
        n = max(len(q), 1)
        self.last_search_stats = {
            "queries": len(q),
            "nprobe": effort[0],
            "max_shards": effort[1],
            "shards_contacted": sum(len(rows) for rows in rows_of.values()) / n,
            "lists_probed": int(np.count_nonzero(lists >= 0)) / n,
            "distances": sum(f[2] for f in found.values()) / n,
            "routing_s": routed - start,
            "remote_s": scanned - routed,
            "shard_scan_s": max((f[3] for f in found.values()), default=0.0),
            "merge_s": end - scanned,
            "missing_shards": missing,
            "partial_queries": int(lost.sum()),
        }
        return D, I

    def _require_trained(self) -> None:
        if not self._shards:
            raise NotTrainedError("train the index first")

    # --- persistence --------------------------------------------------------------------------
    def save(self, directory) -> None:
        """Write the router (``router.ivf``), each shard (``shard-{i}.ivf``, written by its actor)
        and ``meta.json`` (last: a directory without it is not a finished save)."""
        self._require_trained()
        path = Path(directory).resolve()
        path.mkdir(parents=True, exist_ok=True)
        self._router_index.save(path / "router.ivf")
        calls = {
            s: self._shards[s].save.remote(str(path / f"shard-{s}.ivf"))
            for s in range(len(self._shards))
        }
        self._shards.gather(calls, "save")
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "d": self.d,
            "nlist": self.nlist,
            "num_shards": self.num_shards,
            "codes": self.codes,
            "placement": self.placement,
            "nprobe": self.nprobe,
            "ntotal": self.ntotal,
            "shard_of_list": None if self.shard_of_list is None else self.shard_of_list.tolist(),
        }
        with atomic_path(path / "meta.json") as tmp:
            Path(tmp).write_text(json.dumps(meta))

    @classmethod
    def load(
        cls,
        directory,
        *,
        shard_threads: int = 1,
        actor_options: dict | None = None,
        timeout_s: float | None = None,
    ) -> ShardedIVF:
        """Read a directory written by ``save``, starting one actor per shard file; a missing,
        foreign, corrupt or inconsistent directory: ValueError naming what is wrong, with no
        actor left running."""
        path = Path(directory).resolve()
        try:
            meta = json.loads((path / "meta.json").read_text())
            if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}")
            self = cls(
                meta["d"],
                meta["nlist"],
                meta["num_shards"],
                codes=meta["codes"],
                placement=meta["placement"],
                nprobe=meta["nprobe"],
                shard_threads=shard_threads,
                actor_options=actor_options,
                timeout_s=timeout_s,
            )
            router_index = AmortizedIVFBase.load(path / "router.ivf")
            if (router_index.d, router_index.nlist) != (self.d, self.nlist):
                raise ValueError("router.ivf does not match meta.json's d and nlist")
            if meta["shard_of_list"] is not None:
                shard_of_list = np.asarray(meta["shard_of_list"], np.int64)
                if (
                    shard_of_list.shape != (self.nlist,)
                    or not ((shard_of_list >= 0) & (shard_of_list < self.num_shards)).all()
                ):
                    raise ValueError("shard_of_list does not fit nlist and num_shards")
                self.shard_of_list = shard_of_list
            files = [path / f"shard-{s}.ivf" for s in range(self.num_shards)]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise ValueError(f"missing shard files {absent}")
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{path} is not a readable ShardedIVF directory ({type(e).__name__}: {e})"
            ) from None
        except ValueError as e:
            raise ValueError(f"{path} is not a readable ShardedIVF directory: {e}") from None
        self._router_index = router_index
        try:
            held = sum(self._shards.open([str(f) for f in files]).values())
        except ValueError as e:
            raise ValueError(f"{path} is not a readable ShardedIVF directory: {e}") from None
        if held != meta["ntotal"]:
            self._shards.stop()
            raise ValueError(
                f"{path}: the shards hold {held} keys, meta.json says {meta['ntotal']}"
            )
        self.ntotal = meta["ntotal"]
        return self

    def shard_sizes(self) -> list[int]:
        """Keys held by each shard."""
        sizes = self._shards.gather(self._shards.broadcast("ntotal"), "shard_sizes")
        return [sizes[s] for s in range(self.num_shards)]

    def __repr__(self) -> str:
        return (
            f"ShardedIVF(d={self.d}, nlist={self.nlist}, num_shards={self.num_shards}, "
            f"codes={self.codes!r}, placement={self.placement!r}, ntotal={self.ntotal}, "
            f"nprobe={self.nprobe})"
        )


def _merge(n: int, k: int, parts: list) -> tuple[np.ndarray, np.ndarray]:
    """The top-k per query of the shards' results: ``parts`` holds (query rows, (D, I)) pairs;
    what no shard found is padded as faiss pads (-FLT_MAX / -1)."""
    width = max(sum(part[1][0].shape[1] for part in parts), k)
    D = np.full((n, width), np.finfo(np.float32).min, np.float32)
    I = np.full((n, width), -1, np.int64)
    column = 0
    for rows, (scores, ids) in parts:
        D[rows, column : column + scores.shape[1]] = scores
        I[rows, column : column + scores.shape[1]] = ids
        column += scores.shape[1]
    top, columns = topk_rows(D, k)
    return top, np.take_along_axis(I, columns, axis=1)
