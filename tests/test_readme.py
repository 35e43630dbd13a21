"""The README's quickstart runs as written, and its results are what it says."""

import re
from pathlib import Path

import numpy as np

import amips_plugins as ap

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs(tmp_path, monkeypatch):
    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "the README has no Quickstart code block"
    monkeypatch.chdir(tmp_path)  # it saves a file
    names: dict = {}
    exec(compile(block.group(1), "README quickstart", "exec"), names)
    _, best = ap.topk_dot(names["queries"], names["keys"], 10)
    np.testing.assert_array_equal(names["ids"], best)
    assert names["D"].shape == names["labels"].shape == (10, 10)
    assert (tmp_path / "index.amips").is_file()
