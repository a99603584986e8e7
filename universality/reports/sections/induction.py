"""Induction localisation: per-layer scores and the components whose patching restores induction."""

from __future__ import annotations

from typing import Mapping

from .. import figures as F
from ..page import Page, slug
from ..checks import need
from .base import Section, register


class Induction(Section):
    """results.json ``induction`` (one :class:`~universality.analysis.InductionSummary` per host)."""

    key = "induction"

    def validate(self, res: Mapping) -> None:
        """Every entry names its model and has a list of layer scores."""
        for i, s in enumerate(res.get("induction") or []):
            need(s, "model", f"induction[{i}]", str)
            need(s, "layer_scores", f"induction[{i}]", list)

    def render(self, res: Mapping, page: Page) -> None:
        """A heatmap of every host's layer scores and, per host, its components ranked by patching effect."""
        ind = [e for e in (res.get("induction") or []) if e.get("layer_scores")]
        page.heading("Induction localization")
        if not ind:
            page.para("No induction analysis in this run.")
            return
        page.figure("induction_layers", "Per-layer induction score of each model.", lambda: F.induction_heatmap(ind))
        for e in ind:
            if e.get("components"):
                page.figure(slug("induction", e["model"]), f"{e['model']}: components ranked by patching effect.",
                            lambda e=e: F.component_effects(e))

    def findings(self, res: Mapping) -> list[str]:
        """Per host: the layer with the highest score and the component with the largest |normalised effect|."""
        out = []
        for e in res.get("induction") or []:
            scores = e["layer_scores"]
            if not scores:
                continue
            best = max(range(len(scores)), key=lambda i: scores[i])
            line = f"Induction in {e['model']} ({e.get('arch', '?')}) peaks at layer {best} (score {scores[best]:.2f})"
            comps = e.get("components") or []
            if comps:
                top = max(comps, key=lambda c: abs(c.get("normalised_effect", c.get("effect", 0.0))))
                line += (f"; the largest patching effect is {top['component']} at {top.get('position', '?')} "
                         f"({top.get('normalised_effect', top.get('effect', 0.0)):.2f} normalised)")
            out.append(line + ".")
        return out


register(Induction())
