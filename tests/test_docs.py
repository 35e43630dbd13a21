"""Every fenced ``python`` block of the README and of docs/ runs as written, and produces what it
says.

The blocks of one page run in order in one namespace (a later block may use an earlier block's
names), each block in a fresh temporary directory. A block that cannot run here is preceded by
``<!-- not run: the reason -->``; the list of such blocks is kept short and explicit below.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import amips_plugins as ap

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^```(?P<lang>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)
_NOT_RUN = re.compile(r"<!-- not run: (?P<reason>[^>]+?) -->\s*\Z")

# Every block that does not run here: (page, its reason). Keep this short: a block left out is
# a block nobody checks.
NOT_RUN = [
    ("docs/scaling.md", "needs a Ray cluster and data of its own"),
]


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def blocks(page: Path) -> list[tuple[str, str | None, int]]:
    """The page's python blocks: (code, the reason it is not run or None, its first line)."""
    text = page.read_text()
    found = []
    for m in _FENCE.finditer(text):
        if m["lang"].strip() != "python":
            continue
        marker = _NOT_RUN.search(text[: m.start()])
        line = text.count("\n", 0, m.start()) + 2
        found.append((m["code"], marker["reason"] if marker else None, line))
    return found


def run_page(page: Path, tmp_path: Path, monkeypatch) -> dict:
    """Run every block of ``page`` that is not marked, in order; return the namespace."""
    names: dict = {"__name__": "__docs__"}
    for i, (code, reason, line) in enumerate(blocks(page)):
        if reason is not None:
            continue
        where = tmp_path / f"block-{i}"
        where.mkdir()
        monkeypatch.chdir(where)
        exec(compile(code, f"{name(page)}, line {line}", "exec"), names)
    return names


# --- what the blocks must have produced, page by page -----------------------------------------


def check_readme(names: dict, tmp_path: Path) -> None:
    _, best = ap.topk_dot(names["queries"], names["keys"], 10)
    np.testing.assert_array_equal(names["ids"], best)
    np.testing.assert_array_equal(names["I"].shape, (10, 10))
    assert names["labels"].shape == names["distances"].shape == (10, 10)
    assert len(list(tmp_path.glob("block-*/index.amips"))) == 1
    assert isinstance(names["ivf"], ap.AmortizedIVF) and names["ivf"].router is not None
    # the loaded index keeps its calibration: target_recall still answers
    names["ivf"].search(names["queries"], 10, target_recall=0.9)
    compressed = names["compressed"]
    assert compressed.refines and compressed.last_search_stats["reranked"] >= 10


def check_guide(names: dict, tmp_path: Path) -> None:
    assert 0.0 <= names["own_best"] < 1.0  # some keys are not their own best match
    assert 0.0 <= names["kept"] < 1.0  # normalising changed some answers
    assert names["graph"].sort_batches and names["graph"].get_current_count() == len(names["keys"])
    recall = names["recall_at_nprobe"]
    assert list(recall) == sorted(recall) and recall[-1] == 1.0  # nprobe = nlist finds all
    assert names["achieved"] >= 0.85


def check_api_index(names: dict, tmp_path: Path) -> None:
    assert "dimension" in names["message"] and "(5, 16)" in names["message"]


CHECKS = {
    "README.md": check_readme,
    "docs/guide/mips-in-practice.md": check_guide,
    "docs/api/index.md": check_api_index,
}
RUN = [p for p in PAGES if any(reason is None for _, reason, _ in blocks(p))]


@pytest.mark.parametrize("page", RUN, ids=name)
def test_blocks_run(page, tmp_path, monkeypatch):
    names = run_page(page, tmp_path, monkeypatch)
    check = CHECKS.get(name(page))
    if check is not None:
        check(names, tmp_path)


def test_pages_with_blocks_are_checked():
    """Each page whose blocks run is checked for what they produce, beyond running."""
    assert {name(p) for p in RUN} == set(CHECKS)


def test_not_run_list_is_short_and_explicit():
    left_out = [(name(p), reason) for p in PAGES for _, reason, _ in blocks(p) if reason]
    assert sorted(left_out) == sorted(NOT_RUN)
    assert len(NOT_RUN) <= 3
    markers = sum(len(re.findall(r"^<!-- not run:", p.read_text(), re.M)) for p in PAGES)
    assert markers == len(left_out), "a 'not run' marker must come right before a python block"


def test_no_python_block_escapes_the_runner():
    """Blocks fenced as ``py`` / ``python3`` / ``pycon`` would not be run: use ``python``."""
    for page in PAGES:
        for m in _FENCE.finditer(page.read_text()):
            lang = m["lang"].strip()
            assert lang == "python" or not lang.startswith("py"), f"{name(page)}: ```{lang}"


def test_readme_blocks_are_all_found():
    assert len(blocks(ROOT / "README.md")) == 5  # the data, exact, IVF, compressed IVF, HNSW


def test_ivf_stats_table_matches_a_search():
    """docs/api/ivf.md lists exactly the keys of ``last_search_stats`` a search leaves."""
    table = (ROOT / "docs" / "api" / "ivf.md").read_text()
    listed = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((2_000, 8)).astype(np.float32)
    ivf = ap.AmortizedIVF(None, 8, 16)
    ivf.train(keys)
    ivf.add(keys)
    seen = set()
    ivf.search(keys[:50], 5)
    seen |= set(ivf.last_search_stats)
    ivf.search_lists(keys[:50], 5, ivf.probed_lists(keys[:50]))
    seen |= set(ivf.last_search_stats)
    ivf.calibrate(keys[:300], k=5)
    ivf.search(keys[:50], 5, target_recall=0.9)
    seen |= set(ivf.last_search_stats)
    compressed = ap.AmortizedIVF.from_factory(8, "IVF16,PQ4x4fs,RFlat")
    compressed.train(keys)
    compressed.add(keys)
    compressed.search(keys[:50], 5)
    seen |= set(compressed.last_search_stats)
    assert listed == seen


def test_hnsw_stats_table_matches_a_search():
    """docs/api/hnsw.md lists exactly the keys of ``last_search_stats`` a search leaves."""
    table = (ROOT / "docs" / "api" / "hnsw.md").read_text()
    listed = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    keys = np.random.default_rng(0).standard_normal((1_000, 8)).astype(np.float32)
    graph = ap.AmortizedHNSW("ip", 8)
    graph.init_index(1_000)
    graph.add_items(keys)
    graph.knn_query(keys[:20], 5)
    seen = set(graph.last_search_stats)
    graph.calibrate(keys[:300], k=5)
    graph.knn_query(keys[:20], 5, target_recall=0.9)
    seen |= set(graph.last_search_stats)
    assert listed == seen


def test_cli_page_lists_every_option():
    from amips_plugins.harness.cli import build_parser

    page = (ROOT / "docs" / "cli.md").read_text()
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if action.choices and hasattr(action, "_name_parser_map"):
                for sub, subparser in action._name_parser_map.items():
                    assert f"amips {sub}" in page or f"{sub}`" in page, sub
                    parsers.append(subparser)
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help", "--version"):
                    assert f"`{option}" in page, f"{parser.prog} {option}"
