"""AmortizedIVF against faiss's IVF at equal compute: top-1 match rate over an nprobe sweep.

    python benchmarks/bench_ivf.py                        # GloVe 6B 50d
    python benchmarks/bench_ivf.py --dataset wordnet      # WordNet + all-MiniLM-L6-v2, unnormalised
    python benchmarks/bench_ivf.py --codes PQ25x8 --methods faiss-ip router   # compressed lists
    python benchmarks/bench_ivf.py --dataset synthetic --num-keys 300000 1000000 3000000 \
        --methods faiss-ip router --pieces 16 --single 300 --record     # cost as N grows

One run builds every method on the same keys (GloVe: 300k keys, 90k training words, 10k held-out
test words; nlist = sqrt(N)): ours, faiss IVF, faiss IVF-PQ fast-scan + refine and ScaNN (these
two swept over their own pairs of knobs), and prints, per setting: top-1 match rate, recall@10,
wall-clock per query and queries/s for the whole test batch (network time included), distances
and FLOPs per query (coarse step, scan and network), and build time (training included; the
learned part's fit also apart). ``--single N`` adds the median latency of N queries searched
one at a time.
The synthetic set (d = 64, GloVe-like norms, 50k training queries) is drawn at each of
``--num-keys``, with nlist = sqrt(N) each time. Writes the rows as JSON and a PNG of match rate
against wall-clock and against FLOPs under --out; ``--record`` also keeps them in
benchmarks/results/ for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import faiss
import torch

import amips_plugins as ap
from amips_plugins.ground_truth import default_cache_dir
from amips_plugins.harness import peers
from amips_plugins.harness.datasets import builtin, synthetic
from amips_plugins.harness.evaluation import format_table, plot_curves, sweep

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402

METHODS = (
    "faiss-ip",
    "faiss-xbox",
    "faiss-fastscan",
    "scann",
    "auto",
    "router",
    "router-xbox",
    "keynet",
    "supportnet-router",
)


def print_choice(report, index):
    print(f"fit_router() chose nprobe {index.nprobe}; held-out top-1 within the budget:")
    for row in report:
        print(
            f"  {row['top1']:6.1%} at {row['flops'] / 1e6:6.2f} MFLOP, nprobe {row['nprobe']:3d}: "
            f"{row['router']}"
        )


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=["glove50", "wordnet", "synthetic"], default="glove50")
    p.add_argument(
        "--num-keys",
        type=int,
        nargs="+",
        default=[300_000],
        help="synthetic: the key counts, one data set each",
    )
    p.add_argument("--nprobe", type=int, nargs="+", help="the nprobe sweep (default: 1 to 128)")
    p.add_argument("--single", type=int, default=0, help="time this many queries one at a time")
    p.add_argument("--record", action="store_true", help="write benchmarks/results/ivf_*.json")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument(
        "--pieces",
        type=int,
        nargs="+",
        default=[1, 4, 8],
        help="max-affine router sizes, in pieces per list beyond the list means",
    )
    p.add_argument(
        "--router-dims",
        type=int,
        nargs="+",
        default=[0],
        help="score the max-affine routers in these dimensions (0: the keys' own)",
    )
    p.add_argument("--budget", type=float, default=90, help="training seconds of each network")
    p.add_argument(
        "--union",
        action="store_true",
        help="also search every learned index with probe_union "
        "(faiss's lists and the learned ones in turn)",
    )
    p.add_argument(
        "--codes",
        default="Flat",
        help="how the lists store keys, as in faiss.index_factory (Flat, PQ25x8, SQ8, PQ50x4fs, "
        "RaBitQ); the Xbox methods need Flat",
    )
    p.add_argument("--num-test", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/bench_ivf")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    if args.codes != "Flat" and {"faiss-xbox", "router-xbox"} & set(args.methods):
        p.error("the Xbox methods need --codes Flat")
    if args.dataset == "synthetic":  # drawn one at a time: 3M keys take 0.8 GB
        sets = (synthetic(n, seed=args.seed) for n in args.num_keys)
    else:
        sets = iter([builtin(args.dataset, seed=args.seed)])
    rows = []
    for ds in sets:
        rows += [{"keys": len(ds.keys), **row} for row in run(ds, args)]
    if args.record:
        name = "ivf_" + ("scale" if args.dataset == "synthetic" else args.dataset)
        name += "" if args.codes == "Flat" else "_" + args.codes
        record.write(name, f"IVF on {args.dataset}, codes {args.codes}", rows, COLUMNS)


COLUMNS = [
    ("keys", "keys", "d"),
    ("method", "method", ""),
    ("param", "nprobe", "d"),
    ("match_rate", "top-1", ".1%"),
    ("recall", "R@10", ".1%"),
    ("ms_per_query", "ms / query (batch)", ".4f"),
    ("single_query_ms", "ms, one query", ".4f"),
    ("flops_per_query", "FLOPs / query", ".3g"),
    ("build_s", "build s", ".1f"),
    ("fit_s", "router fit s", ".1f"),
]


def run(ds, args) -> list[dict]:
    """Every method of ``args`` built on ``ds`` and swept: the rows."""
    keys, train_q, test_q = ds.keys, ds.train_queries, ds.test_queries[: args.num_test]
    nlist = math.isqrt(len(keys))
    _, true_ids = ap.ground_truth(keys, test_q, 10, cache_dir=default_cache_dir(), progress=False)
    print(
        f"{ds.name}: {len(keys)} keys, {len(train_q)} training and {len(test_q)} test queries, "
        f"d = {ds.d}, "
        f"nlist = {nlist}; {args.threads} threads, faiss {faiss.__version__}, "
        f"torch {torch.__version__}"
    )

    fit_kwargs = dict(
        time_budget=args.budget,
        steps=100_000,
        eval_every=500,
        patience=4,
        device="cpu",
        seed=args.seed,
        num_threads=args.threads,
        cache_dir=default_cache_dir(),
        progress=False,
    )
    codes = args.codes
    sweep_params = {} if args.nprobe is None else {"params": tuple(args.nprobe)}
    methods = []
    if "faiss-ip" in args.methods:
        methods.append(peers.FaissIVF(nlist, codes=codes, **sweep_params))
    if "faiss-xbox" in args.methods:
        methods.append(peers.FaissIVF(nlist, xbox=True))
    if "faiss-fastscan" in args.methods:  # swept over (nprobe, k_factor), as its docs tune it
        methods.append(peers.FaissIVFFastScanRefine(nlist))
    if "scann" in args.methods:  # swept over (leaves, reorder)
        methods.append(peers.ScaNN(args.threads))
    coded = "" if codes == "Flat" else f",{codes}"
    if "auto" in args.methods:  # the router fit_router() chooses, searched at every nprobe
        methods.append(
            peers.LearnedIVF(
                f"AmortizedIVF{coded} IP, fit_router()'s choice",
                nlist,
                lambda ivf: print_choice(
                    ivf.fit_router(train_q, keys=keys, num_threads=args.threads), ivf
                ),
                codes=codes,
                **sweep_params,
            )
        )
    for xbox in (False, True):
        if ("router-xbox" if xbox else "router") not in args.methods:
            continue
        for per_list in args.pieces:
            for dim in args.router_dims:
                methods.append(
                    peers.LearnedIVF(
                        f"AmortizedIVF{coded} {'Xbox-L2' if xbox else 'IP'} max-affine "
                        f"{per_list}/list" + (f" in {dim}-d" if dim else ""),
                        nlist,
                        lambda ivf, m=per_list, dim=dim: ivf.fit_router(
                            train_q,
                            keys=keys,
                            num_pieces=m * nlist,
                            router_dim=dim or None,
                            num_threads=args.threads,
                        ),
                        xbox=xbox,
                        codes=codes,
                        **sweep_params,
                    )
                )
    if "keynet" in args.methods:
        methods.append(
            peers.LearnedIVF(
                f"AmortizedIVF{coded} IP KeyNet 256x3 ({args.budget:.0f} s)",
                nlist,
                lambda ivf: ivf.fit_query_transform(
                    train_q, ap.KeyNet(ds.d, width=256, depth=3), keys=keys, **fit_kwargs
                ),
                codes=codes,
            )
        )
    if "supportnet-router" in args.methods:
        methods.append(
            peers.LearnedIVF(
                f"AmortizedIVF{coded} IP SupportNet router 256x2 ({args.budget:.0f} s)",
                nlist,
                lambda ivf: ivf.fit_router(
                    train_q,
                    ap.SupportNet(ds.d, nlist, width=256, depth=2, homogeneous=True),
                    keys=keys,
                    **fit_kwargs,
                ),
                codes=codes,
            )
        )

    if args.union:  # every learned index searched alone, then with probe_union
        learned = [m for m in methods if isinstance(m, peers.LearnedIVF)]
        for m in learned:
            m.probe_union = False
        methods = [v for m in methods for v in ((m, m.union_twin()) if m in learned else (m,))]

    rows = sweep(methods, keys, test_q, true_ids, k=10, single_queries=args.single)
    print(format_table(rows))
    out = Path(args.out) / (ds.name + ("" if codes == "Flat" else "_" + codes))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    plot_curves(rows, out / "match_rate.png", f"IVF on {ds.name} (nlist {nlist}), top-1 match rate")
    print(f"wrote {out / 'results.json'} and {out / 'match_rate.png'}")
    return rows


if __name__ == "__main__":
    main()
