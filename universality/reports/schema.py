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
from .checks import need


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
