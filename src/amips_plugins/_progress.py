"""Progress of long calls (training, ground truth, sweeps, embedding): off by default.

``progress=True`` shows a tqdm bar (``pip install tqdm``); a callable is called as
``progress(done, total)`` after every step, e.g. to drive a bar of your own or to log.
"""

from __future__ import annotations

from collections.abc import Callable

from ._optional import require

__all__ = ["Progress", "ProgressArg"]

ProgressArg = bool | Callable[[int, int], object] | None


class Progress:
    """Reports ``done`` out of ``total`` steps through ``progress`` (see the module docstring)."""

    def __init__(self, progress: ProgressArg, total: int, desc: str, unit: str = "it"):
        self.total, self.done = total, 0
        self._callback = progress if callable(progress) else None
        self._bar = None
        if progress is True:
            tqdm = require("tqdm.auto", "harness").tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit)
        elif progress not in (False, None) and self._callback is None:
            raise TypeError(f"progress must be a bool or a callable(done, total), got {progress!r}")

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def show(self, values: dict) -> None:
        """Figures shown beside the bar (e.g. the latest validation metrics)."""
        if self._bar is not None:
            self._bar.set_postfix(
                {k: f"{v:.3g}" if isinstance(v, float) else v for k, v in values.items()}
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
