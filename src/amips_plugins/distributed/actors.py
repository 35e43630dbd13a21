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
    """The actors of a sharded index (none before ``start``), indexable by shard."""

    def __init__(self, actor_options: dict, timeout_s: float | None, threads: int):
        self.actor_options, self.timeout_s, self.threads = actor_options, timeout_s, threads
        self._actors: list = []

    def __len__(self) -> int:
        return len(self._actors)

    def __getitem__(self, shard: int):
        return self._actors[shard]

    def start(self, sources: list) -> None:
        """One actor per shard, from serialized indexes or saved files."""
        remote = _remote_shard().options(**self.actor_options)
        self._actors = [
            remote.remote(
                source if isinstance(source, str) else AmortizedIVFBase.deserialize(source),
                self.threads,
            )
            for source in sources
        ]

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
