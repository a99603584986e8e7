"""Small checks of results.json fields, each failing with one sentence that names the field (used by every section)."""

from __future__ import annotations

from typing import Any, Mapping

from .._errors import UniversalityError
from ..results import SCHEMA


def need(obj: Mapping, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    """``obj[key]``, or one sentence naming ``where.key`` when it is absent or not of type ``kind``."""
    if not isinstance(obj, Mapping) or key not in obj:
        raise UniversalityError(f"results.json is missing '{where}.{key}'; it must follow schema {SCHEMA} (see docs/report.md)")
    val = obj[key]
    if not isinstance(val, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UniversalityError(f"results.json field '{where}.{key}' must be a {names}, not {type(val).__name__}")
    return val


def check_summary(s: Any, where: str) -> None:
    """Check a distribution summary (from :func:`summarize_values`) at ``where``; ``None`` passes."""
    if s is None:
        return
    for key in ("n", "mean", "median"):
        need(s, key, where, (int, float))
    ci = need(s, "ci", where, list)
    if len(ci) != 2:
        raise UniversalityError(f"results.json field '{where}.ci' must be [low, high]")
    hist = need(s, "hist", where, dict)
    edges = need(hist, "edges", f"{where}.hist", list)
    counts = need(hist, "counts", f"{where}.hist", list)
    if len(edges) != len(counts) + 1:
        raise UniversalityError(f"results.json field '{where}.hist' needs one more edge than counts")
