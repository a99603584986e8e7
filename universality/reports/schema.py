"""The ``results.json`` schema: what every stage writes and the report reads.

The full field-by-field description lives in ``docs/report.md``. This module
only holds the version tag, the helpers that build the small recurring pieces
(a distribution summary with its confidence interval, a histogram), and the
validation that turns a malformed file into one clear :class:`UniversalityError`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._errors import UniversalityError
from ..matching.stats import HIST_EDGES, summarize_values  # re-exported: reports.summarize_values stays public

SCHEMA = "universality.results/1"
"""Version tag stored under ``"schema"`` in every results.json."""

SECTIONS = ("pairs", "families", "seed_overlap", "induction", "write_lag")
"""Optional result sections; a missing or empty one is reported as 'not run'."""

def _need(obj: Mapping, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise UniversalityError(f"results.json is missing '{where}.{key}'; it must follow schema {SCHEMA} (see docs/report.md)")
    val = obj[key]
    if not isinstance(val, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UniversalityError(f"results.json field '{where}.{key}' must be a {names}, not {type(val).__name__}")
    return val


def _check_summary(s: Any, where: str) -> None:
    if s is None:
        return
    for key in ("n", "mean", "median"):
        _need(s, key, where, (int, float))
    ci = _need(s, "ci", where, list)
    if len(ci) != 2:
        raise UniversalityError(f"results.json field '{where}.ci' must be [low, high]")
    hist = _need(s, "hist", where, dict)
    edges = _need(hist, "edges", f"{where}.hist", list)
    counts = _need(hist, "counts", f"{where}.hist", list)
    if len(edges) != len(counts) + 1:
        raise UniversalityError(f"results.json field '{where}.hist' needs one more edge than counts")


def validate_results(res: Any) -> dict:
    """Check that ``res`` follows :data:`SCHEMA`; return it unchanged or raise one clear error."""
    if not isinstance(res, dict):
        raise UniversalityError("results.json must hold a JSON object at the top level")
    tag = _need(res, "schema", "results", str)
    if tag != SCHEMA:
        raise UniversalityError(f"results.json has schema '{tag}'; this version reads '{SCHEMA}'")
    _need(res, "title", "results", str)
    _need(res, "environment", "results", dict)
    _need(res, "corpus", "results", dict)
    models = _need(res, "models", "results", list)
    names = set()
    for i, m in enumerate(models):
        names.add(_need(m, "name", f"models[{i}]", str))
        _need(m, "arch", f"models[{i}]", str)
    for i, p in enumerate(res.get("pairs") or []):
        w = f"pairs[{i}]"
        for side in ("a", "b"):
            n = _need(p, side, w, str)
            if n not in names:
                raise UniversalityError(f"results.json '{w}.{side}' names model '{n}', which is not in 'models'")
        _check_summary(_need(p, "a_to_b", w, dict), f"{w}.a_to_b")
        _check_summary(p.get("b_to_a"), f"{w}.b_to_a")
        for label, s in (p.get("references") or {}).items():
            _check_summary(s, f"{w}.references.{label}")
        grid = p.get("grid")
        if grid:
            vals = np.asarray(_need(grid, "values", f"{w}.grid", list), dtype=float)
            la, lb = _need(grid, "layers_a", f"{w}.grid", list), _need(grid, "layers_b", f"{w}.grid", list)
            if vals.shape != (len(la), len(lb)):
                raise UniversalityError(f"results.json '{w}.grid.values' must be {len(la)}x{len(lb)} (layers_a x layers_b)")
    for i, s in enumerate(res.get("seed_overlap") or []):
        w = f"seed_overlap[{i}]"
        for key in ("model", "kind"):
            _need(s, key, w, str)
        _need(s, "shared_fraction", w, (int, float))
    for i, s in enumerate(res.get("induction") or []):
        _need(s, "model", f"induction[{i}]", str)
        _need(s, "layer_scores", f"induction[{i}]", list)
    for i, s in enumerate(res.get("write_lag") or []):
        w = f"write_lag[{i}]"
        _need(s, "model", w, str)
        for j, layer in enumerate(_need(s, "layers", w, list)):
            eff = _need(layer, "effect", f"{w}.layers[{j}]", list)
            if eff and not math.isclose(sum(eff), 1.0, abs_tol=1e-3):
                raise UniversalityError(f"results.json '{w}.layers[{j}].effect' must sum to 1 (it sums to {sum(eff):.4f})")
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
