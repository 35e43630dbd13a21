"""One chart of every library: recall@10 against queries/s, from bench_effort's records.

    python benchmarks/plot_peers.py                    # GloVe: docs/peers_glove50.png
    python benchmarks/plot_peers.py --dataset wordnet

Reads ``benchmarks/results/effort_ivf_<dataset>.json`` and ``effort_hnsw_<dataset>.json`` (either
may be missing): at each target, every library's fastest contender that reached it on the
calibration queries, placed at the recall it achieved on the test queries.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OURS = {"ivf": "AmortizedIVF target_recall", "hnsw": "AmortizedHNSW target_recall"}
SETTING = re.compile(r" (nprobe|k_factor|reorder|ef|epsilon) .*$")


def library(method: str, index: str) -> str:
    """The library a contender of ``index``'s record belongs to."""
    if method == "ours target_recall":
        return OURS[index]
    if method.startswith("ours, one nprobe"):
        return "AmortizedIVF, one nprobe"
    return SETTING.sub("", method)


def fastest(records: dict[str, dict]) -> dict[str, list[tuple[float, float]]]:
    """library -> [(recall, queries/s)] of its fastest contender at each target."""
    best: dict[tuple[str, float], dict] = {}
    for index, record in records.items():
        for row in record["rows"]:
            key = (library(row["method"], index), row["target"])
            if key not in best or row["queries_per_s"] > best[key]["queries_per_s"]:
                best[key] = row
    curves: dict[str, list[tuple[float, float]]] = {}
    for (name, _), row in sorted(best.items(), key=lambda item: item[0][1]):
        curves.setdefault(name, []).append((row["recall"], row["queries_per_s"]))
    return curves


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=["glove50", "wordnet"], default="glove50")
    args = p.parse_args()
    records = {
        index: json.loads(path.read_text())
        for index in ("ivf", "hnsw")
        if (path := RESULTS / f"effort_{index}_{args.dataset}.json").is_file()
    }
    if not records:
        raise SystemExit(f"no effort_*_{args.dataset}.json in {RESULTS}: run bench_effort.py")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for name, points in sorted(fastest(records).items()):
        recall, qps = zip(*points)
        ours = name.startswith("Amortized")
        ax.plot(recall, qps, "o-" if ours else "s--", label=name, linewidth=2.5 if ours else 1)
    env = next(iter(records.values()))["environment"]
    ax.set(
        xlabel="recall@10 (test queries)",
        ylabel="queries/s, one batch (log)",
        yscale="log",
        title=f"{args.dataset}: every library at its smallest setting reaching 0.90 / 0.95 / "
        f"0.99\n{env['cpu']}, {env['cores']} threads",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    out = ROOT / "docs" / f"peers_{args.dataset}.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
