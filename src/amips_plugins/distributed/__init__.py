"""An IVF index over a Ray cluster (``pip install "amips_plugins[distributed]"``): the keys in
shards held by actors, each query sent only to the shards that hold the lists it probes."""

from .sharded_ivf import ShardedIVF, ShardUnavailableError

__all__ = ["ShardedIVF", "ShardUnavailableError"]
