"""What an installed package promises: a fast import that pulls in no optional dependency, the
search library usable without torch, the top-level names, and ``amips --version``."""

import subprocess
import sys
import textwrap

import amips_plugins as ap


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_import_loads_no_optional_dependency():
    r = run_python("""
        import sys
        import amips_plugins
        heavy = {"torch", "faiss", "hnswlib", "matplotlib", "tqdm", "sentence_transformers"}
        print(sorted(heavy & set(sys.modules)))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_search_library_runs_with_torch_unimportable(tmp_path):
    r = run_python(f"""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        import numpy as np
        import amips_plugins as ap

        rng = np.random.default_rng(0)
        keys = (rng.standard_normal((3000, 16)) * rng.lognormal(0, 0.5, (3000, 1))).astype("f4")
        queries = rng.standard_normal((400, 16)).astype("f4")
        _, best = ap.topk_dot(queries, keys, 1)
        exact = ap.ExactIndex(16)
        exact.add(keys)
        assert (exact.search(queries, 1)[1] == best).all()
        ap.XboxTransform(16).add_keys(keys)

        index = ap.AmortizedIVF(None, 16, 20)
        index.train(keys)
        index.add(keys)
        index.fit_router(queries[:300], num_pieces=16 * 20)
        index.nprobe = 3
        D, I = index.search(queries[300:], 5)
        index.save({str(tmp_path / "ivf.zip")!r})
        again = ap.AmortizedIVF.load({str(tmp_path / "ivf.zip")!r})
        D2, I2 = again.search(queries[300:], 5)
        assert (I == I2).all() and (D == D2).all()
        assert isinstance(again.router, ap.MaxAffineRouter)

        graph = ap.AmortizedHNSW("ip", 16)
        graph.init_index(len(keys))
        graph.add_items(keys)
        graph.knn_query(queries, 3)
        try:
            import amips_plugins.learn
        except ImportError as e:
            print("learn:", e)
        print("torch imported:", sys.modules.get("torch") is not None)
    """)
    assert r.returncode == 0, r.stderr
    assert "torch imported: False" in r.stdout
    assert 'pip install "amips_plugins[learn]"' in r.stdout


def test_headline_classes_at_the_top_level():
    from amips_plugins.hnsw import AmortizedHNSW
    from amips_plugins.ivf import AmortizedIVF
    from amips_plugins.routing import MaxAffineRouter

    assert ap.AmortizedIVF is AmortizedIVF and ap.AmortizedHNSW is AmortizedHNSW
    assert ap.MaxAffineRouter is MaxAffineRouter
    assert set(ap.__all__) <= set(dir(ap))


def test_version_from_one_source():
    from importlib.metadata import version

    assert ap.__version__ == version("amips_plugins")
    r = subprocess.run(
        [sys.executable, "-m", "amips_plugins", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.strip() == f"amips_plugins {ap.__version__}"
