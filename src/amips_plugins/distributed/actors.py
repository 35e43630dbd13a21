"""The Ray side of ``ShardedIVF``: one actor per shard, started from serialized indexes or saved
files, and called with a deadline, so that a dead or silent shard is an error that names it."""

from __future__ import annotations

import logging
import time
from functools import cache

from .._optional import require
from ..ivf import AmortizedIVFBase
from .shard import Shard

__all__ = ["ShardActors", "ShardUnavailableError"]


class ShardUnavailableError(RuntimeError):
    """A shard's actor died, or did not answer within ``timeout_s``."""


class ShardActors:
    """The actors of a sharded index (none before ``start`` or ``open``), indexable by shard."""

    def __init__(self, actor_options: dict, timeout_s: float | None, threads: int):
        self.actor_options, self.timeout_s, self.threads = actor_options, timeout_s, threads
        self._actors: list = []

    def __len__(self) -> int:
        return len(self._actors)

    def __getitem__(self, shard: int):
        return self._actors[shard]

    def start(self, indexes: list[bytes]) -> None:
        """One actor per shard, each holding one of the serialized ``indexes``."""
        remote = _remote_shard().options(**self.actor_options)
        self._actors = [
            remote.remote(AmortizedIVFBase.deserialize(index), self.threads) for index in indexes
        ]

    def open(self, files: list[str]) -> dict:
        """One actor per shard, each reading one of the saved ``files``: shard -> its number of
        keys. A file an actor cannot read is the ValueError that names it; on any failure every
        actor is stopped."""
        remote = _remote_shard().options(**self.actor_options)
        self._actors = [remote.remote(None, self.threads) for _ in files]
        try:
            return self.gather(
                {s: a.load.remote(f) for s, (a, f) in enumerate(zip(self._actors, files))},
                "load",
            )
        except BaseException as e:
            self.stop()
            cause = getattr(e, "cause", None)  # what a shard raised, inside Ray's RayTaskError
            if isinstance(cause, ValueError):
                raise ValueError(str(cause)) from None
            raise

    def stop(self) -> None:
        """Kill every actor (their keys go with them)."""
        ray = _ray()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def add(self, parts: dict) -> None:
        """Add ``parts`` (shard -> (keys, ids)), all or nothing: when a shard cannot be reached,
        the others remove their part again and ShardUnavailableError says so. An actor runs a
        caller's calls in order, so a shard too slow to answer in time removes its part too."""
        calls = {s: self._actors[s].add_with_ids.remote(x, ids) for s, (x, ids) in parts.items()}
        try:
            self.gather(calls, "add")
        except Exception as e:  # a shard's own error too: what the others added goes again
            undo = {s: self._actors[s].remove_ids.remote(parts[s][1]) for s in calls}
            self.gather(undo, "add", allow_partial=True)
            if not isinstance(e, ShardUnavailableError):
                raise
            n = sum(len(ids) for _, ids in parts.values())
            raise ShardUnavailableError(
                f"{e}: none of the {n} keys was added (the shards reached dropped their part "
                "again); add them once every shard answers, or load the last save if a shard "
                "died, since its keys died with it"
            ) from None

    def broadcast(self, method: str, *args) -> dict:
        """Call ``method`` on every shard: shard -> object ref."""
        return {s: getattr(a, method).remote(*args) for s, a in enumerate(self._actors)}

    def gather(self, calls: dict, what: str, allow_partial: bool = False) -> dict:
        """The results of the shards' ``calls`` (shard -> object ref); an unavailable shard raises
        ShardUnavailableError, or with ``allow_partial`` is left out."""
        ray = _ray()
        unavailable: tuple[type[Exception], ...] = (
            ray.exceptions.RayActorError,
            ray.exceptions.GetTimeoutError,
        )
        if hasattr(ray.exceptions, "ActorUnavailableError"):  # ray >= 2.30
            unavailable += (ray.exceptions.ActorUnavailableError,)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        results, failures = {}, {}
        for s, ref in calls.items():
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                results[s] = ray.get(ref, timeout=wait)
            except unavailable as e:
                failures[s] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if failures and not allow_partial:
            listed = "; ".join(f"shard {s}: {why}" for s, why in failures.items())
            raise ShardUnavailableError(f"{what} could not reach every shard ({listed})")
        return results


def _ray():
    """Ray, with a local cluster started (quietly) if the caller has not connected to one."""
    ray = require("ray", "distributed")
    if not ray.is_initialized():
        # quiet, as a library should be: Ray's warnings and the actors' output stay in its logs
        ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    return ray


@cache
def _remote_shard():
    return _ray().remote(Shard)
