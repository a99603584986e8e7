"""The ``results.json`` schema: what every stage writes and the report reads.

The full field-by-field description lives in ``docs/report.md``; the version tag and the typed
:class:`~universality.results.RunResults` live in :mod:`universality.results`. This module holds the
validation that turns a malformed file into one clear :class:`UniversalityError`: the top level here,
each section's part in that section (:mod:`universality.reports.sections`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from .._errors import UniversalityError
from ..matching.stats import HIST_EDGES, summarize_values  # noqa: F401  re-exported: reports.summarize_values stays public
from ..results import SCHEMA, check_schema


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


def validate_results(res: Any) -> dict:
    """Check that ``res`` follows :data:`SCHEMA` (the top level, then every registered section); return it unchanged
    or raise one clear error."""
    from .sections import registered

    if not isinstance(res, dict):
        raise UniversalityError("results.json must hold a JSON object at the top level")
    check_schema(need(res, "schema", "results", str))
    need(res, "title", "results", str)
    need(res, "environment", "results", dict)
    need(res, "corpus", "results", dict)
    for i, m in enumerate(need(res, "models", "results", list)):
        need(m, "name", f"models[{i}]", str)
        need(m, "arch", f"models[{i}]", str)
    for section in registered():
        section.validate(res)
    return res


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate a results.json (a file, or a run directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise UniversalityError(f"'{p}' does not exist; give a run directory that holds a results.json")
    try:
        res = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UniversalityError(f"'{p}' is not valid JSON ({e.__class__.__name__} at {getattr(e, 'pos', '?')})") from None
    return validate_results(res)
