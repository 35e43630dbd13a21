"""Files: atomic writes (a crash or Ctrl-C never leaves a half-written artefact under the final
name) and the on-disk cache of computed arrays."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "default_cache_dir", "cached_arrays", "key_fingerprint"]


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, else removed."""
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
                return arrays
        except (OSError, ValueError, KeyError):
            pass  # unreadable entry: compute again and replace it
    arrays = list(compute())
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{f"a{i}": a for i, a in enumerate(arrays)})
    return arrays


def key_fingerprint(keys) -> dict:
    """Identifies a key set: {"n", "d", "blake2b"} of its float32 contents."""
    x = np.ascontiguousarray(keys, dtype=np.float32)
    digest = hashlib.blake2b(memoryview(x).cast("B"), digest_size=16).hexdigest()
    return {"n": int(x.shape[0]), "d": int(x.shape[1]), "blake2b": digest}
