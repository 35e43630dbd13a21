"""Files: atomic writes (a crash or Ctrl-C never leaves a half-written artefact under the final
name) and the on-disk cache of computed arrays."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "default_cache_dir", "cached_arrays", "key_fingerprint"]

logger = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; renamed to ``path`` on success, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_cache_dir() -> Path:
    """``$AMIPS_CACHE_DIR``, else ``~/.cache/amips_plugins``."""
    return Path(os.environ.get("AMIPS_CACHE_DIR", Path.home() / ".cache" / "amips_plugins"))


def cached_arrays(path: Path | None, compute, is_valid) -> list[np.ndarray]:
    """The arrays stored at ``path`` (.npz) when readable and ``is_valid(arrays)``; otherwise
    ``compute()``'s, stored there atomically. ``path=None`` only computes."""
    if path is not None and path.is_file():
        try:
            with np.load(path) as f:
                arrays = [f[name] for name in f.files]  # in the order they were written
            if is_valid(arrays):
                logger.info("read cached arrays %s", path)
                return arrays
            logger.warning("cache entry %s does not fit its inputs: computing it again", path)
        except (OSError, ValueError, KeyError) as e:
            logger.warning("cache entry %s is unreadable (%s): computing it again", path, e)
    arrays = list(compute())
    if path is not None:
        logger.info("caching arrays at %s", path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{f"a{i}": a for i, a in enumerate(arrays)})
    return arrays


def key_fingerprint(keys) -> dict:
    """Identifies a key set: {"n", "d", "blake2b"} of its float32 contents."""
    x = np.ascontiguousarray(keys, dtype=np.float32)
    digest = hashlib.blake2b(x.data.cast("B"), digest_size=16).hexdigest()
    return {"n": int(x.shape[0]), "d": int(x.shape[1]), "blake2b": digest}
