"""Depth correspondence: the layer × layer MPPC grid of every pair."""

from __future__ import annotations

from typing import Mapping

from .. import figures as F
from ..page import Page, slug
from .base import Section, register


def depth_sentence(pair: Mapping) -> str | None:
    """Where each layer of A finds its best partner layer of B, whether that is monotone in depth, and how close the
    relative depths are (1 − mean |relative depth of A − relative depth of its best B layer|); ``None`` for a 1-layer grid."""
    import numpy as np

    g = pair.get("grid")
    if not g or len(g["layers_a"]) <= 1 or len(g["layers_b"]) <= 1:
        return None
    vals = np.asarray(g["values"], dtype=float)
    best = [int(np.nanargmax(row)) for row in vals]
    rel = [b / max(1, len(g["layers_b"]) - 1) for b in best]
    depth = [i / max(1, len(g["layers_a"]) - 1) for i in range(len(best))]
    mono = all(x <= y for x, y in zip(best, best[1:]))
    closeness = 1 - sum(abs(a - b) for a, b in zip(depth, rel)) / len(rel)
    return (f"Depth map {pair['a']} × {pair['b']}: each layer's best-matching layer is "
            f"{', '.join(str(g['layers_b'][b]) for b in best)} "
            f"({'monotone in depth' if mono else 'not monotone in depth'}; relative-depth agreement {closeness:.2f} on a 0–1 scale).")


class DepthGrid(Section):
    """The ``grid`` of each results.json pair (validated with the pairs)."""

    key = "pairs"

    def render(self, res: Mapping, page: Page) -> None:
        """One heatmap per pair that has a grid (no heading when none has)."""
        grids = [p for p in res.get("pairs") or [] if p.get("grid")]
        if not grids:
            return
        page.heading("Depth correspondence: layer × layer")
        for p in grids:
            page.figure(slug("grid", p["a"], p["b"]), f"{p['grid'].get('stat', 'mean')} MPPC for every layer pair of {p['a']} and {p['b']}.",
                        lambda p=p: F.layer_grid(p))

    def findings(self, res: Mapping) -> list[str]:
        """:func:`depth_sentence` of every pair with a grid of at least 2 × 2 layers."""
        return [s for s in (depth_sentence(p) for p in res.get("pairs") or []) if s]


register(DepthGrid())
