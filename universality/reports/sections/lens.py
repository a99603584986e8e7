"""Logit and tuned lens: per-block KL to the final distribution, top-1 agreement and entropy, all hosts against depth."""

from __future__ import annotations

from typing import Mapping

from ..._errors import UniversalityError
from .. import figures_lens as FL
from ..checks import need
from ..page import Page, csv_text
from .base import Section, register


def lens_entries(res: Mapping) -> list:
    """The ``lens_steer.lens`` entries of a results dict (``[]`` when absent)."""
    return list((res.get("lens_steer") or {}).get("lens") or [])


class Lens(Section):
    """results.json ``lens_steer.lens`` (one :class:`~universality.analysis.lens.LensResult` per host)."""

    key = "lens_steer"

    def validate(self, res: Mapping) -> None:
        """Every entry names its model; every curve has one value per depth."""
        for i, e in enumerate(lens_entries(res)):
            w = f"lens_steer.lens[{i}]"
            need(e, "model", w, str)
            depths = need(e, "depths", w, list)
            for j, c in enumerate(need(e, "curves", w, list)):
                for key in ("kl", "kl_ci", "top1", "top1_ci", "entropy", "entropy_ci"):
                    if len(need(c, key, f"{w}.curves[{j}]", list)) != len(depths):
                        raise UniversalityError(f"results.json '{w}.curves[{j}].{key}' must have one value per depth ({len(depths)})")

    def render(self, res: Mapping, page: Page) -> None:
        """The overlay of every host's curves against relative depth, and a table per lens."""
        entries = lens_entries(res)
        if not entries:
            return
        page.heading("Logit lens and tuned lens")
        page.para("Each block's residual stream read through the final norm and unembedding (logit lens), or first through "
                  "a trained affine translator (tuned lens), compared with the model's own next-token distribution on held-out "
                  "tokens. Bands: 95% bootstrap intervals over sequences. Where two architectures' curves fall at the same "
                  "relative depth, their blocks are equally far from the output: a depth correspondence beside MPPC's.")
        page.figure("lens_curves", "KL to the final distribution (left) and top-1 agreement (right) against relative depth.",
                    lambda: FL.lens_curves(entries))
        rows = []
        for e in entries:
            for c in e["curves"]:
                rows.append([e["model"], c["lens"]] + [f"{k:.3f} [{lo:.3f}, {hi:.3f}]" for k, (lo, hi) in zip(c["kl"], c["kl_ci"])])
        page.table(["model", "lens"] + [f"block {i}" for i in range(max(len(e["depths"]) for e in entries))], rows)

    def tables(self, res: Mapping) -> dict[str, str]:
        """``lens.csv``: one row per host, lens and block."""
        entries = lens_entries(res)
        if not entries:
            return {}
        rows = [["model", "arch", "lens", "block", "depth", "kl", "kl_lo", "kl_hi", "top1", "entropy"]]
        for e in entries:
            for c in e["curves"]:
                for i, d in enumerate(e["depths"]):
                    rows.append([e["model"], e.get("arch", ""), c["lens"], i, f"{d:.3f}", f"{c['kl'][i]:.5f}",
                                 f"{c['kl_ci'][i][0]:.5f}", f"{c['kl_ci'][i][1]:.5f}", f"{c['top1'][i]:.4f}", f"{c['entropy'][i]:.4f}"])
        return {"lens.csv": csv_text(rows)}

    def findings(self, res: Mapping) -> list[str]:
        """Per host: at how many blocks before the last the tuned lens's KL is below the logit lens's."""
        out = []
        for e in lens_entries(res):
            curves = {c["lens"]: c for c in e["curves"]}
            if "tuned" not in curves or len(e["depths"]) < 2:
                continue
            t, lg = curves["tuned"]["kl"][:-1], curves["logit"]["kl"][:-1]
            below = sum(a < b for a, b in zip(t, lg))
            out.append(f"Tuned lens on {e['model']} ({e.get('arch', '?')}): KL below the logit lens's at {below} of {len(t)} "
                       f"blocks before the last (first block: {t[0]:.2f} vs {lg[0]:.2f} nats).")
        return out


register(Lens())
