"""Files: atomic writes (a crash or Ctrl-C never leaves a half-written artefact under the final
name; what a killed save leaves behind is removed by the next save beside it), bounded reads of
archive members, and the on-disk cache of computed arrays."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = [
    "CALIBRATION_QUERIES",
    "atomic_path",
    "scratch_path",
    "read_member",
    "read_archive",
    "write_archive",
    "default_cache_dir",
    "cached_arrays",
    "key_fingerprint",
    "npy_bytes",
    "read_npy",
]

logger = logging.getLogger(__name__)

CALIBRATION_QUERIES = "calibration_queries.npy"  # the member an index keeps them in


def _remove_orphans(path: Path) -> None:
    """Remove the temporary files of saves to ``path`` whose process is gone (killed mid-save)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            logger.info("removed %s, left by an interrupted save", tmp)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def scratch_path(path: str | os.PathLike, role: str = "part"):
    """Yield a new empty file beside ``path`` named after it and this process, removed on exit
    (and, should the process be killed, by the next save to ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.{role}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; renamed to ``path`` on success (with the mode the
    umask gives a new file), else removed."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory: give the path of a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    with scratch_path(path, "save") as tmp:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)


def write_archive(file, meta: dict, members: dict[str, bytes | Path]) -> None:
    """Write a zip archive of ``members`` (bytes, or a file's path), uncompressed, and last its
    ``meta.json``: ``meta`` with a manifest of every member's size and CRC-32, by which
    ``read_archive`` checks the archive whole."""
    with zipfile.ZipFile(file, "w") as z:
        for name, data in members.items():
            if isinstance(data, Path):
                z.write(data, name)
            else:
                z.writestr(name, data)
        manifest = {i.filename: {"size": i.file_size, "crc32": i.CRC} for i in z.infolist()}
        z.writestr("meta.json", json.dumps({**meta, "members": manifest}))


def read_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """Member ``name`` of an archive, refused (ValueError) when it claims more than ``limit`` bytes:
    members are written uncompressed, so none can be larger than its archive."""
    size = archive.getinfo(name).file_size
    if size > limit:
        raise ValueError(f"member {name} claims {size} bytes, more than its archive holds")
    return archive.read(name)


def read_archive(source, name: str, version: int, members: tuple[str, ...]):
    """``(meta, blobs)`` of an archive written by ``name``'s save (a path, or its bytes): its
    ``meta.json`` (format ``amips_plugins.<name>`` and ``version`` checked) and those of
    ``members`` it holds, each bounded by the archive's size. When ``meta.json`` has a manifest
    (every file written since it was added), the archive must hold exactly the members it lists,
    with their sizes and CRC-32s. Anything else, a damaged zip included, is one ValueError
    that names the file."""
    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    what = "the archive" if in_memory else source
    try:
        limit = len(source) if in_memory else os.path.getsize(source)
        with zipfile.ZipFile(io.BytesIO(source) if in_memory else source) as z:
            meta = json.loads(read_member(z, "meta.json", limit))
            if not isinstance(meta, dict) or meta.get("format") != f"amips_plugins.{name}":
                raise ValueError("it is not one")
            if meta.get("version") != version:
                raise ValueError(
                    f"it has format version {meta.get('version')}, this release reads {version}"
                )
            blobs = _members(z, meta.get("members"), members, limit)
    except (
        ValueError,  # json's errors too
        OSError,
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        KeyError,
        NotImplementedError,  # a compression method zipfile lacks
        RuntimeError,  # zipfile: "encrypted"
    ) as e:
        cause = str(e) if type(e) is ValueError else f"{type(e).__name__}: {e}"
        raise ValueError(f"{what} is not a readable {name} file: {cause}") from None
    return meta, blobs


def _members(z: zipfile.ZipFile, manifest, wanted: tuple[str, ...], limit: int) -> dict:
    """The members of ``wanted`` that ``z`` holds. With a ``manifest``, ``z`` must hold exactly
    the members it lists besides ``meta.json``, each of its size and CRC-32 (ValueError)."""
    names = z.namelist()
    if len(set(names)) != len(names):
        raise ValueError("it holds two members of one name")
    if manifest is None:  # a file written before manifests
        return {m: read_member(z, m, limit) for m in wanted if m in names}
    if not isinstance(manifest, dict):
        raise ValueError("its manifest is not a mapping")
    held = set(names) - {"meta.json"}
    if missing := sorted(set(manifest) - held):
        raise ValueError(f"member {missing[0]} is missing")
    if extra := sorted(held - set(manifest)):
        raise ValueError(f"member {extra[0]} is not in its manifest")
    blobs = {}
    for member, entry in manifest.items():
        if not isinstance(entry, dict) or set(entry) != {"size", "crc32"}:
            raise ValueError(f"the manifest entry of member {member} is malformed")
        data = read_member(z, member, limit)
        if len(data) != entry["size"] or zlib.crc32(data) != entry["crc32"]:
            raise ValueError(f"member {member} is not the one its manifest describes")
        if member in wanted:
            blobs[member] = data
    return blobs


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
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
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


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in the ``.npy`` format, as an archive member holds it."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_npy(data: bytes) -> np.ndarray:
    """The array of ``.npy`` bytes (never pickled objects); ValueError for anything else."""
    return np.load(io.BytesIO(data), allow_pickle=False)
