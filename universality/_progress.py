"""Progress bars for long loops: tqdm on a terminal, silent otherwise or when quiet."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_QUIET = os.environ.get("UNIVERSALITY_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    """Silence (``True``) or restore (``False``) every progress bar of the package."""
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    """Whether progress bars are switched off (``--quiet`` or no terminal on stderr)."""
    return _QUIET or not sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it", **kw) -> "tqdm":
    """A tqdm bar over ``iterable`` that is disabled when :func:`is_quiet` is true."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=is_quiet(), dynamic_ncols=True, leave=False, **kw)
