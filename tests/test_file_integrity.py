"""Every archive this package writes is checked whole when read: a missing, extra or altered
member, a damaged zip structure or a truncation is one ValueError, never a crash, a hang or an
index that differs from the one saved."""

import io
import json
import struct
import subprocess
import sys
import textwrap
import zipfile

import faiss
import hnswlib
import numpy as np
import pytest

import amips_plugins as ap

D, NLIST = 8, 8
HAS_TORCH = True
try:
    import torch  # noqa: F401
except ImportError:
    HAS_TORCH = False

# How each kind of archive is loaded and summarised in a child process: the summary is the same
# for two files exactly when they hold the same index.
_LOADERS = {
    "ivf": "index = ap.AmortizedIVF.load(path)\n"
    "z = zipfile.ZipFile(io.BytesIO(index.serialize()))\n"
    "summary = {n: hashlib.sha256(z.read(n)).hexdigest() for n in sorted(z.namelist())}",
    "hnsw": f"index = ap.AmortizedHNSW(space='ip', dim={D})\n"
    "index.load_index(path)\n"
    "index.save_index(path + '.again')\n"
    "z = zipfile.ZipFile(path + '.again')\n"
    "summary = {n: hashlib.sha256(z.read(n)).hexdigest() for n in sorted(z.namelist())}",
    "model": "model = load_model(path)\n"
    "summary = {k: hashlib.sha256(v.numpy().tobytes()).hexdigest()\n"
    "           for k, v in model.state_dict().items()}\n"
    "summary['config'] = model.config",
}


def _keys():
    rng = np.random.default_rng(0)
    keys = (rng.standard_normal((400, D)) * rng.lognormal(0, 0.4, (400, 1))).astype(np.float32)
    return keys, rng.standard_normal((300, D)).astype(np.float32)


def _ivf(factory: str | None):
    keys, queries = _keys()
    if factory is None:
        index = ap.AmortizedIVF(faiss.IndexFlatIP(D), D, NLIST)
    else:
        index = ap.AmortizedIVF.from_factory(D, factory)
    index.train(keys)
    index.add(keys)
    if factory is None:  # the learned parts: router, ledger, calibration and its queries
        index.fit_router(queries[:200], num_pieces=16)
        index.calibrate(queries[200:], k=5)
    return index


def _saved(kind: str, tmp_path):
    """A saved archive of ``kind`` and how to load it."""
    path = tmp_path / f"{kind}.zip"
    if kind.startswith("ivf"):
        factory = {"ivf": None, "ivf-pq": f"IVF{NLIST},PQ2x4", "ivf-sq": f"IVF{NLIST},SQ8"}.get(
            kind, {"ivf-fs": f"IVF{NLIST},PQ2x4fs", "ivf-rabitq": f"IVF{NLIST},RaBitQ"}.get(kind)
        )
        _ivf(factory).save(path)
        return path, "ivf"
    if kind == "hnsw":
        keys, queries = _keys()
        index = ap.AmortizedHNSW(space="ip", dim=D)
        index.init_index(len(keys), M=8, ef_construction=40)
        index.add_items(keys)
        index.calibrate(queries[:100], k=5, max_ef=50)
        index.save_index(path)
        return path, "hnsw"
    ap.KeyNet(D, width=16, depth=2).save(path)
    return path, "model"


KINDS = ["ivf", "ivf-pq", "ivf-sq", "ivf-fs"]
KINDS += ["ivf-rabitq"] if hasattr(faiss, "IndexIVFRaBitQ") else []
KINDS += ["hnsw"] + (["model"] if HAS_TORCH else [])


def _regions(data: bytes) -> dict[str, list[int]]:
    """The byte offsets of each part of a zip: local headers, member data, central directory,
    end record."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        (start,) = struct.unpack_from("<I", data, len(data) - 22 + 16)
    regions: dict[str, list[int]] = {"local headers": [], "data": []}
    for info in infos:
        name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
        begin = info.header_offset + 30 + name_len + extra_len
        regions["local headers"] += range(info.header_offset, begin)
        regions["data"] += range(begin, begin + info.compress_size)
    regions["central directory"] = list(range(start, len(data) - 22))
    regions["end record"] = list(range(len(data) - 22, len(data)))
    return regions


def _mutations(data: bytes, rng) -> dict[str, bytes]:
    """Single-byte flips sampled in every region of the zip, and truncations."""
    out = {}
    for region, offsets in _regions(data).items():
        for offset in rng.choice(offsets, min(len(offsets), 12), replace=False):
            flipped = bytearray(data)
            flipped[offset] ^= 0xFF if offset % 2 else 0x01
            out[f"{region} byte {offset}"] = bytes(flipped)
    for length in sorted(set(rng.integers(0, len(data), 8).tolist()) | {0, len(data) - 1}):
        out[f"truncated to {length}"] = data[:length]
    return out


_CHILD = """
import hashlib, io, json, sys, zipfile
import amips_plugins as ap
{import_model}
for path in sys.argv[1:]:
    print(json.dumps({{"start": path}}), flush=True)
    try:
{load}
        print(json.dumps({{"path": path, "summary": summary}}), flush=True)
    except ValueError as e:
        print(json.dumps({{"path": path, "error": str(e)}}), flush=True)
"""


def _load_in_child(kind: str, paths: list[str]) -> list[dict]:
    code = _CHILD.format(
        import_model="from amips_plugins.learn.models import load_model" if kind == "model" else "",
        load=textwrap.indent(_LOADERS[kind], " " * 8),
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=300
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    last = next((line["start"] for line in reversed(lines) if "start" in line), None)
    assert done.returncode == 0, f"the load of {last} ended the process: {done.stderr[-2000:]}"
    return [line for line in lines if "start" not in line]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_archive_is_refused_or_loads_what_was_saved(kind, tmp_path):
    path, loader = _saved(kind, tmp_path)
    data = path.read_bytes()
    rng = np.random.default_rng(sum(map(ord, kind)))
    files = {str(path): "as saved"}
    for i, (what, damaged) in enumerate(_mutations(data, rng).items()):
        target = tmp_path / f"damaged{i}.zip"
        target.write_bytes(damaged)
        files[str(target)] = what
    results = {r["path"]: r for r in _load_in_child(loader, list(files))}
    saved = results.pop(str(path))
    assert "summary" in saved, saved
    for file, result in results.items():
        if "error" in result:
            assert "\n" not in result["error"], (files[file], result["error"])
        else:
            assert result["summary"] == saved["summary"], f"{files[file]} loaded other content"
    refused = sum("error" in r for r in results.values())
    assert refused >= len(results) // 2  # most damage is refused, not ignored


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "model"])
def test_a_missing_member_is_named(kind, tmp_path):
    path, loader = _saved(kind, tmp_path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for gone in set(members) - {"meta.json"}:
        with zipfile.ZipFile(path, "w") as z:
            for name, blob in members.items():
                if name != gone:
                    z.writestr(name, blob)
        with pytest.raises(ValueError, match=f"member {gone} is missing"):
            _load(loader, path)


def _load(loader: str, path):
    if loader == "ivf":
        return ap.AmortizedIVF.load(path)
    index = ap.AmortizedHNSW(space="ip", dim=D)
    index.load_index(path)
    return index


def test_an_extra_member_or_a_flipped_name_is_refused(tmp_path):
    path, _ = _saved("ivf", tmp_path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("notes.txt", b"hello")
    with pytest.raises(ValueError, match="member notes.txt is not in its manifest"):
        ap.AmortizedIVF.load(path)
    path, _ = _saved("ivf", tmp_path)
    data = bytearray(path.read_bytes())
    start = data.rindex(b"router.npz")  # in the central directory
    data[start] ^= 0x01
    path.write_bytes(data)
    with pytest.raises(ValueError, match="not a readable AmortizedIVF file"):
        ap.AmortizedIVF.load(path)


def test_a_member_whose_compression_method_flips_is_a_value_error(tmp_path):
    for kind in ("ivf", "hnsw"):
        path, loader = _saved(kind, tmp_path)
        data = bytearray(path.read_bytes())
        # meta.json's central directory entry, the last: its method stored (0) -> deflate (8).
        entry = data.rindex(b"PK\x01\x02")
        assert data[entry + 46 : entry + 55] == b"meta.json" and data[entry + 10] == 0
        data[entry + 10] = 8
        path.write_bytes(data)
        with pytest.raises(ValueError, match="not a readable"):
            _load(loader, path)


def test_a_file_without_its_router_but_naming_one_is_refused(tmp_path):
    # As files written before manifests were: meta.json names a router the archive lacks.
    path, _ = _saved("ivf", tmp_path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist() if n != "router.npz"}
    meta = json.loads(members["meta.json"])
    del meta["members"]
    members["meta.json"] = json.dumps(meta).encode()
    members.pop("ledger.npz")
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    with pytest.raises(ValueError, match="names router 'MaxAffineRouter', it holds none"):
        ap.AmortizedIVF.load(path)


def test_a_crafted_member_that_keeps_its_manifest_is_refused(tmp_path):
    path, _ = _saved("ivf", tmp_path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["calibration_queries.npy"] = members["calibration_queries.npy"][:-4] + bytes(4)
    with zipfile.ZipFile(path, "w") as z:  # a consistent zip, an old manifest
        for name, blob in members.items():
            z.writestr(name, blob)
    with pytest.raises(ValueError, match="calibration_queries.npy is not the one its manifest"):
        ap.AmortizedIVF.load(path)


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_a_model_file_with_flipped_weights_is_refused(tmp_path):
    from amips_plugins.learn.models import load_model

    model = ap.KeyNet(D, width=16, depth=2)
    path = tmp_path / "model.pt"
    model.save(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)  # a weight tensor
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len + 3] ^= 0x10
    path.write_bytes(data)
    with pytest.raises(ValueError, match="does not match its CRC-32"):
        load_model(path)
    data = bytearray(model.to_bytes())
    data[26] ^= 0x01  # the first local header's name length
    with pytest.raises(ValueError, match="not a readable amips_plugins model") as error:
        load_model(bytes(data))
    assert "\n" not in str(error.value)


def test_a_plain_hnswlib_file_with_another_m_in_its_header_is_refused(tmp_path):
    keys, _ = _keys()
    plain = hnswlib.Index(space="ip", dim=D)
    plain.init_index(len(keys), M=8)
    plain.add_items(keys)
    path = tmp_path / "plain.bin"
    plain.save_index(str(path))
    data = path.read_bytes()
    # M (size_t) sits after offsetLevel0 .. enterpoint_node (6 size_t, an int, a uint32) and
    # maxM, maxM0.
    at = 6 * 8 + 4 + 4 + 2 * 8
    assert int.from_bytes(data[at : at + 8], "little") == 8
    path.write_bytes(data[:at] + (8 | 1 << 40).to_bytes(8, "little") + data[at + 8 :])
    index = ap.AmortizedHNSW(space="ip", dim=D)
    with pytest.raises(ValueError, match="M = "):
        index.load_index(path)
