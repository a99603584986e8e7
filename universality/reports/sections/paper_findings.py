"""The reference paper's Mamba circuit findings, tested on every architecture of the run, side by side."""

from __future__ import annotations

from typing import Mapping

from ..page import Page, csv_text
from ..checks import need
from .base import Section, register


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def _lag(o: Mapping | None, d: int) -> str:
    if not o or d >= len(o.get("change") or []):
        return "–"
    return f"{o['change'][d]:+.2f} [{o['low'][d]:+.2f}, {o['high'][d]:+.2f}]"


class PaperFindings(Section):
    """results.json ``paper_findings`` (one :class:`~universality.analysis.PaperFindings` per host)."""

    key = "paper_findings"

    def validate(self, res: Mapping) -> None:
        """Every entry names its model and architecture."""
        for i, s in enumerate(res.get("paper_findings") or []):
            need(s, "model", f"paper_findings[{i}]", str)
            need(s, "arch", f"paper_findings[{i}]", str)

    def render(self, res: Mapping, page: Page) -> None:
        """One table, a column block per architecture: localisation, previous-token mixer, Off-by-One per δ, verdict."""
        pf = res.get("paper_findings") or []
        if not pf:
            return
        page.heading("The paper's circuit findings, per architecture")
        page.para("Induction layer: largest in-context gain lost on mean-ablating a layer's mixer output (its share of the "
                  "positive layer scores). Previous-token mixer: in-context gain lost when that layer's conv taps at lags ≥ 1 "
                  "(Mamba) or its token shift (RWKV) are removed. Off-by-One: induction-metric change when only the layer's "
                  "write at s+δ is corrupted (mean [95 % interval] over prompts; the paper: −9.1 at s+1, −0.01 at s).")
        header = ["model", "arch", "in-context gain", "induction layer", "mixer removed: gain lost"] + \
                 [f"write at s+{d}" if d else "write at s" for d in range(4)]
        rows = []
        for e in pf:
            layer = e.get("induction_layer")
            lost = e.get("mixer_gain_lost")
            icl = e.get("icl_score") or 0.0
            lost_s = "not tested" if lost is None else f"{lost:.2f} nats ({_pct(lost / icl) if icl > 0 else '–'})"
            rows.append([e["model"], e["arch"], f"{icl:.2f}", "–" if layer is None else f"{layer} ({_pct(e.get('layer_share'))})",
                         f"{e.get('mixer', '')}: {lost_s}"] + [_lag(e.get("off_by_one"), d) for d in range(4)])
        page.table(header, rows)
        for e in pf:
            if e.get("verdict"):
                page.para(e["verdict"])

    def tables(self, res: Mapping) -> dict[str, str]:
        """``paper_findings.csv``: one row per host and lag δ."""
        pf = res.get("paper_findings") or []
        if not pf:
            return {}
        rows = [["model", "arch", "induction_layer", "mixer", "mixer_gain_lost", "lag", "change", "low", "high"]]
        for e in pf:
            o = e.get("off_by_one") or {}
            for d, c in enumerate(o.get("change") or []):
                rows.append([e["model"], e["arch"], e.get("induction_layer"), e.get("mixer"), e.get("mixer_gain_lost"), d,
                             f"{c:.4f}", f"{o['low'][d]:.4f}", f"{o['high'][d]:.4f}"])
        return {"paper_findings.csv": csv_text(rows)}

    def findings(self, res: Mapping) -> list[str]:
        """The verdict sentence of every host."""
        return [e["verdict"] for e in res.get("paper_findings") or [] if e.get("verdict")]


register(PaperFindings())
