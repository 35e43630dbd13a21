import json
import threading
import zipfile
import zlib

import numpy as np
import pytest

from amips_plugins import _core

FAMILIES = (["scalar", "avx2", "avx512"], ["scalar", "neon"])  # x86-64, AArch64


def clustered(dim: int, sizes, seed: int = 0) -> list[np.ndarray]:
    """Float32 sets of the given sizes drawn around the same 300 centres, with varied norms:
    keys and queries drawn alike."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((300, dim))

    def draw(n):
        x = centers[rng.integers(0, 300, n)] + rng.standard_normal((n, dim))
        return (x * rng.lognormal(0, 0.3, (n, 1))).astype(np.float32)

    return [draw(n) for n in sizes]


def supported_levels() -> list[str]:
    best = _core.detected_simd_level()
    family = next(f for f in FAMILIES if best in f)
    return family[: family.index(best) + 1]


@pytest.fixture(params=supported_levels())
def simd(request, monkeypatch):
    """Runs the test once per instruction set this CPU runs."""
    monkeypatch.setenv("AMIPS_SIMD", request.param)
    return request.param


def reference_topk(queries, keys, k):
    """float64 numpy top-k: higher score first, then lower id; padded with -inf / -1."""
    return reference_topk_of_scores(
        np.asarray(queries, np.float64) @ np.asarray(keys, np.float64).T, k
    )


def reference_topk_of_scores(scores, k):
    """The k best entries of each row of ``scores``: higher first, then lower column; NaN as -inf;
    padded with -inf / -1 beyond the columns (faiss's convention)."""
    scores = np.asarray(scores, np.float64)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    kk = min(k, scores.shape[1])
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    top = np.take_along_axis(scores, ids, axis=1)
    pad = k - kk
    return (
        np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf),
        np.pad(ids, ((0, 0), (0, pad)), constant_values=-1),
    )


def assert_topk_matches(scores, ids, ref_scores, ref_ids, atol=1e-4):
    """Scores close to the reference; ids equal wherever the reference order is not a near-tie."""
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=atol)
    gaps = np.abs(np.diff(ref_scores, axis=1))
    clear = np.ones_like(ids, dtype=bool)
    clear[:, 1:] &= ~(gaps <= atol)
    clear[:, :-1] &= ~(gaps <= atol)
    np.testing.assert_array_equal(ids[clear], ref_ids[clear])


def call_from_threads(fn, num_threads: int) -> list:
    """fn() run at once on ``num_threads`` threads; its results, or the first error raised."""
    results, errors = [None] * num_threads, []

    def run(i):
        try:
            results[i] = fn()
        except Exception as e:  # re-raised below, on the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(num_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def beside_writer(readers, writer) -> list[int]:
    """Each of ``readers`` called in a loop on its own thread while ``writer()`` runs on this one;
    how many calls each reader made (the first error of any thread is raised)."""
    done, errors = threading.Event(), []
    calls = [0] * len(readers)

    def loop(i):
        try:
            while not done.is_set():
                readers[i]()
                calls[i] += 1
        except Exception as e:  # re-raised below, on the test's thread
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(readers))]
    for t in threads:
        t.start()
    try:
        writer()
    finally:
        done.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return calls


def rewrite_member(path, name, transform):
    """Rewrite member ``name`` of a saved archive through ``transform(bytes) -> bytes``, as a
    crafted file would: its manifest in ``meta.json`` made to describe the new member."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members[name] = transform(members[name])
    meta = json.loads(members["meta.json"])
    if name != "meta.json" and "members" in meta:
        meta["members"][name] = {"size": len(members[name]), "crc32": zlib.crc32(members[name])}
        members["meta.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, blob in members.items():
            z.writestr(n, blob)
