"""Off-by-One: at which lag each layer writes a token into its token-mixing memory."""

from __future__ import annotations

import math
from collections import Counter
from typing import Mapping

from ..._errors import UniversalityError
from .. import figures as F
from ..page import Page, csv_text
from ..checks import need
from .base import Section, register


class WriteLag(Section):
    """results.json ``write_lag`` (one :class:`~universality.analysis.WriteLagResult` per host)."""

    key = "write_lag"

    def validate(self, res: Mapping) -> None:
        """Every entry names its model; every layer's effect sums to 1."""
        for i, s in enumerate(res.get("write_lag") or []):
            w = f"write_lag[{i}]"
            need(s, "model", w, str)
            for j, layer in enumerate(need(s, "layers", w, list)):
                eff = need(layer, "effect", f"{w}.layers[{j}]", list)
                if eff and not math.isclose(sum(eff), 1.0, abs_tol=1e-3):
                    raise UniversalityError(f"results.json '{w}.layers[{j}].effect' must sum to 1 (it sums to {sum(eff):.4f})")

    def render(self, res: Mapping, page: Page) -> None:
        """The profiles as one heatmap panel per host, and each layer's peak lag."""
        wl = [e for e in (res.get("write_lag") or []) if e.get("layers")]
        page.heading("Off-by-One: write-lag profiles")
        if not wl:
            page.para("No write-lag analysis in this run.")
            return
        page.para("For each layer: how strongly replacing the token at position s changes the layer's memory write at s+δ, "
                  "normalised to sum to 1.")
        page.figure("write_lag", "Write-lag profile per layer and architecture.", lambda: F.write_lag_profiles(wl))
        page.table(["model", "architecture"] + [f"layer {i}" for i in range(max(len(e["layers"]) for e in wl))],
                   [[e["model"], e.get("arch", "")] + [f"peak δ={layer['peak']}" for layer in e["layers"]] for e in wl])

    def tables(self, res: Mapping) -> dict[str, str]:
        """``write_lag.csv``: one row per host and layer (effects space-separated)."""
        wl = res.get("write_lag") or []
        if not wl:
            return {}
        return {"write_lag.csv": csv_text([["model", "arch", "layer", "peak", "effect"]]
                                          + [[e["model"], e.get("arch", ""), layer["layer"], layer["peak"],
                                              " ".join(f"{x:.4f}" for x in layer["effect"])] for e in wl for layer in e["layers"]])}

    def findings(self, res: Mapping) -> list[str]:
        """Per host: the most common peak lag and how many layers have it."""
        out = []
        for e in res.get("write_lag") or []:
            peaks = Counter(layer["peak"] for layer in e["layers"])
            if not peaks:
                continue
            lag, count = peaks.most_common(1)[0]
            out.append(f"Write lag in {e['model']} ({e.get('arch', '?')}): {count} of {len(e['layers'])} layers write a token's "
                       f"information at lag δ={lag}" + (" (one position late: the Off-by-One pattern)." if lag == 1 else "."))
        return out


register(WriteLag())
