"""The C++ kernel test (tests/cpp/test_kernels.cpp): built from csrc/ with each compiler found and
run natively, and cross-compiled for AArch64 and run under qemu-user (the NEON kernel).

Missing tools skip a case, unless AMIPS_REQUIRE_CROSS=1 (set by CI), where they fail it.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((ROOT / "csrc").glob("*.cpp")), ROOT / "tests" / "cpp" / "test_kernels.cpp"]
SOURCES = [s for s in SOURCES if s.name != "bindings.cpp"]  # the Python module is not needed here
FLAGS = ["-std=c++17", "-O2", "-ffp-contract=off", "-pthread", f"-I{ROOT / 'csrc'}"]

CASES = {
    "g++": (["g++"], []),
    "clang++": (["clang++"], []),
    "aarch64": (["aarch64-linux-gnu-g++", "-static"], ["qemu-aarch64"]),
}


def _tools_or_skip(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        if os.environ.get("AMIPS_REQUIRE_CROSS") == "1":
            pytest.fail(f"missing {missing} (AMIPS_REQUIRE_CROSS=1)")
        pytest.skip(f"missing {missing}")


@pytest.mark.parametrize("case", CASES)
def test_kernels_match_the_reference_bit_for_bit(case, tmp_path):
    compiler, runner = CASES[case]
    _tools_or_skip(compiler[0], *runner)
    binary = tmp_path / "test_kernels"
    subprocess.run(
        [*compiler, *FLAGS, *map(str, SOURCES), "-o", str(binary)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    result = subprocess.run([*runner, str(binary)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {"aarch64": ["scalar", "neon"]}.get(case, ["scalar"])
    for level in expected:
        assert f"{level}: ok" in result.stdout
