"""What each ``amips`` subcommand does (``cli`` parses the command line and calls these)."""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path

__all__ = ["METHODS", "cmd_bench_topk", "cmd_demo", "cmd_eval", "cmd_train"]

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
    # Written before the plot, so that a failing plot loses no measurement.
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'results.json'}")
    if args.no_plot:
        return 0
    title = (
        f"{ds.name}: {len(ds.keys)} keys, {len(ds.test_queries)} queries, {args.threads} threads"
    )
    try:
        plot_curves(rows, out / "match_rate.png", title)
    except Exception as e:  # matplotlib fails in many ways; whichever, the results stay saved
        print(
            f"amips: error: could not plot {out / 'match_rate.png'} ({type(e).__name__}: {e}); "
            f"the results are in {out / 'results.json'}",
            file=sys.stderr,
        )
        return 2
    print(f"wrote {out / 'match_rate.png'}")
    return 0


def _check_plotting(args) -> None:
    """Refuse, before any work, to run without the plot's matplotlib unless --no-plot."""
    import importlib.util

    if not args.no_plot and importlib.util.find_spec("matplotlib") is None:
        raise ImportError(
            "matplotlib is not installed, and the plot needs it: "
            'pip install "amips_plugins[harness]", or pass --no-plot'
        )


def cmd_demo(args) -> int:
    from .datasets import MipsDataset, glove50, wordnet_minilm

    _check_plotting(args)
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

    _check_plotting(args)
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
    try:
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
    except FloatingPointError as e:
        # The library's advice names its argument; this names the option (nothing is saved).
        raise ValueError(
            f"training diverged with --lr {args.lr:g} (the loss stopped being finite); "
            f"try a smaller --lr, e.g. --lr {args.lr / 10:g}"
        ) from e
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
