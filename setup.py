# Builds the C++ core; all metadata lives in pyproject.toml.
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ext_modules = [
    Pybind11Extension(
        "amips_plugins._core",
        sorted(glob("csrc/*.cpp")),
        cxx_std=17,
        # Portable build: each ISA's kernels pick their own target in source; no -march=native,
        # no -ffast-math (results must be exact), and no fusing of a product and a sum that the
        # source did not ask for (a score must be the same bits on every path of one ISA).
        extra_compile_args=["-O3", "-ffp-contract=off"],
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
