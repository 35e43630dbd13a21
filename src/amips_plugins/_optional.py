"""Optional dependencies: imported where they are used, with an error that says how to install
them."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """``import module``, or ImportError naming the extra of amips_plugins that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{module} is not installed (needed here); install it with: "
            f'pip install "amips_plugins[{extra}]"  ({e})'
        ) from e
