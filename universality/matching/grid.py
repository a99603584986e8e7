"""Layer × layer MPPC grids: the depth-correspondence map between two hosts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .._errors import UniversalityError
from .._progress import progress
from .mppc import MPPCResult, mppc


@dataclass(frozen=True)
class LayerGrid:
    """Summaries of MPPC for every (layer of A, layer of B) pair."""

    layers_a: list
    """Row labels (layers of host A)."""
    layers_b: list
    """Column labels (layers of host B)."""
    mean: dict[str, torch.Tensor]
    """Direction (``"a_to_b"``, ``"b_to_a"``) → [L_a, L_b] mean MPPC over live features."""
    median: dict[str, torch.Tensor]
    """Direction → [L_a, L_b] median MPPC."""
    frac_above: dict[str, dict[float, torch.Tensor]]
    """Direction → threshold → [L_a, L_b] fraction of features with MPPC above it."""

    def best_match(self, direction: str = "a_to_b") -> torch.Tensor:
        """[L_a] for ``a_to_b`` (index of B's layer with highest mean MPPC), or [L_b] for ``b_to_a``."""
        m = self.mean[direction]
        return m.argmax(dim=1) if direction == "a_to_b" else m.argmax(dim=0)

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN written as None)."""
        clean = lambda t: [[None if not np.isfinite(v) else float(v) for v in row] for row in t.tolist()]  # noqa: E731
        return {"layers_a": [str(x) for x in self.layers_a], "layers_b": [str(x) for x in self.layers_b],
                "mean": {d: clean(t) for d, t in self.mean.items()},
                "median": {d: clean(t) for d, t in self.median.items()},
                "frac_above": {d: {str(k): clean(t) for k, t in v.items()} for d, v in self.frac_above.items()}}


def grid_from_results(results: Mapping[tuple[Any, Any], MPPCResult], layers_a: list, layers_b: list, *,
                      min_freq: float = 0.0, thresholds: tuple[float, ...] = (0.5, 0.7, 0.9)) -> LayerGrid:
    """Assemble a :class:`LayerGrid` from precomputed results keyed by (layer_a, layer_b)."""
    shape = (len(layers_a), len(layers_b))
    dirs = ("a_to_b", "b_to_a")
    mean = {d: torch.full(shape, float("nan"), dtype=torch.float64) for d in dirs}
    median = {d: torch.full(shape, float("nan"), dtype=torch.float64) for d in dirs}
    frac = {d: {float(t): torch.full(shape, float("nan"), dtype=torch.float64) for t in thresholds} for d in dirs}
    for i, la in enumerate(layers_a):
        for j, lb in enumerate(layers_b):
            if (la, lb) not in results:
                raise UniversalityError(f"no MPPC result for layer pair ({la!r}, {lb!r})")
            for d in dirs:
                s = results[(la, lb)].summary(d, min_freq=min_freq, thresholds=thresholds)
                mean[d][i, j], median[d][i, j] = s.mean, s.median
                for t, v in s.frac_above.items():
                    frac[d][t][i, j] = v
    return LayerGrid(list(layers_a), list(layers_b), mean, median, frac)


def mppc_grid(codes_a: Mapping[Any, Any], codes_b: Mapping[Any, Any], *, min_freq: float = 0.0,
              thresholds: tuple[float, ...] = (0.5, 0.7, 0.9), sparse: bool | str = "auto") -> LayerGrid:
    """MPPC for every layer pair: ``codes_a`` maps layer → [n_tokens, n_a] codes of host A, ``codes_b`` likewise
    for host B, all over the same aligned tokens."""
    if not codes_a or not codes_b:
        raise UniversalityError("codes_a and codes_b must each map at least one layer to its codes")
    la, lb = list(codes_a), list(codes_b)
    results = {}
    for a in progress(la, desc="layer grid", unit="layer"):
        for b in lb:
            results[(a, b)] = mppc(codes_a[a], codes_b[b], sparse=sparse)
    return grid_from_results(results, la, lb, min_freq=min_freq, thresholds=thresholds)
