"""What every benchmark writes: its rows, how to show them, and where they were measured.

A record is ``benchmarks/results/<name>.json``: the command, the commit, the CPU model, the date,
the library versions, the rows and the columns to show (key, header, format). ``report.py`` turns
the records into ``docs/benchmarks.md``; no figure there is typed by hand.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU model name, with family and model on x86: "AMD EPYC (family 26 model 2)"."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    name = fields.get("model name") or fields.get("Model") or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']} model {fields.get('model', '?')})"
    return name


def environment() -> dict:
    """Where and with what a benchmark ran."""
    import numpy as np

    import amips_plugins as ap

    root = Path(__file__).resolve().parents[1]

    def git(*args):
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else "unknown"

    versions = {
        "amips_plugins": ap.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    distributions = metadata.packages_distributions()  # hnswlib has no __version__
    for name in ("faiss", "hnswlib", "torch", "usearch", "voyager", "scann", "svs", "ngtpy"):
        module = sys.modules.get(name)
        if module is not None:
            version = getattr(module, "__version__", None)
            if version is None and name in distributions:
                version = metadata.version(distributions[name][0])
            versions[name] = version or "unknown"
    return {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], root), *sys.argv[1:]]),
        "commit": git("rev-parse", "--short", "HEAD")
        + (" (modified)" if git("status", "--porcelain", "--untracked-files=no") else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "simd": ap.simd_level(),
        "versions": versions,
    }


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def write(
    name: str, title: str, rows: list[dict], columns: list[tuple[str, str, str]], notes: str = ""
) -> Path:
    """Store a benchmark's rows under results/<name>.json (replacing the previous record).

    columns: (row key, header, format spec such as ".1f" or ".1%") for the table in the docs.
    """
    RESULTS.mkdir(exist_ok=True)
    record = {
        "title": title,
        "environment": environment(),
        "notes": notes,
        "columns": [list(c) for c in columns],
        "rows": [{k: _clean(v) for k, v in row.items()} for row in rows],
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    return path
