"""Induction components compared across architectures: the induction rows of the depth map, after the paper's findings."""

from __future__ import annotations

from typing import Mapping

from .. import figures as F
from ..checks import need
from ..page import Page, csv_text, slug
from .base import Section, register


def _cell(row: Mapping, i: int, j: int) -> str:
    v = row["values"][i][j]
    if v is None:
        return "–"
    lo, hi, p, null = row["low"][i][j], row["high"][i][j], row["p_value"][i][j], row["null_mean"][i][j]
    iv = "" if lo is None or hi is None else f" [{lo:.2f}, {hi:.2f}]"
    return f"{v:.2f}{iv}" + ("" if null is None else f", null {null:.2f}") + ("" if p is None else f" (p = {p:.3f})")


def _grid_pair(m: Mapping, row: Mapping) -> dict:
    """The ``{a, b, grid}`` shape :func:`~universality.reports.figures.layer_grid` draws (missing cells as NaN)."""
    vals = [[float("nan") if v is None else v for v in r] for r in row["values"]]
    return {"a": m["a"], "b": m["b"], "grid": {"layers_a": m["layers_a"], "layers_b": m["layers_b"], "values": vals,
                                                "stat": f"{row['latents']}-latent"}}


class InductionMatchSection(Section):
    """results.json ``induction_match`` (one :class:`~universality.analysis.InductionMatch` per host pair)."""

    key = "induction_match"

    def validate(self, res: Mapping) -> None:
        """Every entry names both hosts, its layers and its rows."""
        for i, m in enumerate(res.get("induction_match") or []):
            where = f"induction_match[{i}]"
            need(m, "a", where, str)
            need(m, "b", where, str)
            need(m, "layers_a", where, list)
            need(m, "layers_b", where, list)
            need(m, "rows", where, list)

    def render(self, res: Mapping, page: Page) -> None:
        """Per pair: one table row per (latent set, layer pair), the localised pair starred, the verdict sentence and
        the induction-latent grid as a heatmap."""
        entries = res.get("induction_match") or []
        if not entries:
            return
        page.heading("Induction components across architectures: a row of the depth map")
        page.para("Dictionaries at every layer (hook in the table), trained on half repeated random rows and half text; "
                  "score = mean of both directions' mean MPPC on held-out rows, for all live latents and for the induction "
                  "latents only (activation differs between the second and first copy, |Welch t| ≥ 4). Brackets: bootstrap "
                  "95 % interval over sequences; p: shuffled-rows null (B's rows re-paired within repeated / text rows). "
                  "★ marks the pair of localised induction layers (the paper's-findings section); a match is claimed when "
                  "its margin over the best other cell of its row and column has an interval above 0 and p < 0.05.")
        for m in entries:
            pairs = [(i, j) for i in range(len(m["layers_a"])) for j in range(len(m["layers_b"]))]
            header = ["latents"] + [f"{m['a']} L{m['layers_a'][i]} × {m['b']} L{m['layers_b'][j]}"
                                    + (" ★" if (i, j) == (m.get("layer_a"), m.get("layer_b")) else "") for i, j in pairs] + \
                     ["margin of ★", "claim"]
            rows = []
            for r in m["rows"]:
                margin = "–" if r.get("margin") is None else f"{r['margin']:+.3f} [{r['margin_low']:+.3f}, {r['margin_high']:+.3f}]"
                rows.append([r["latents"]] + [_cell(r, i, j) for i, j in pairs] + [margin, "yes" if r.get("claim") else "no"])
            page.table(header, rows)
            if m.get("sentence"):
                page.para(m["sentence"])
            ind = next((r for r in m["rows"] if r["latents"] == "induction"), None)
            if ind is not None and any(v is not None for row in ind["values"] for v in row):
                page.figure(slug("induction-match", m["a"], m["b"]),
                            f"Induction-latent MPPC for every layer pair of {m['a']} and {m['b']} ({m.get('hook', '')}).",
                            lambda m=m, ind=ind: F.layer_grid(_grid_pair(m, ind)))

    def tables(self, res: Mapping) -> dict[str, str]:
        """``induction_match.csv``: one row per (pair, latent set, layer pair)."""
        entries = res.get("induction_match") or []
        if not entries:
            return {}
        out = [["a", "b", "hook", "latents", "layer_a", "layer_b", "localised", "score", "low", "high", "null_mean", "p_value"]]
        for m in entries:
            for r in m["rows"]:
                for i, la in enumerate(m["layers_a"]):
                    for j, lb in enumerate(m["layers_b"]):
                        out.append([m["a"], m["b"], m.get("hook"), r["latents"], la, lb,
                                    (i, j) == (m.get("layer_a"), m.get("layer_b")), r["values"][i][j], r["low"][i][j],
                                    r["high"][i][j], r["null_mean"][i][j], r["p_value"][i][j]])
        return {"induction_match.csv": csv_text(out)}

    def findings(self, res: Mapping) -> list[str]:
        """The sentence of every pair."""
        return [m["sentence"] for m in res.get("induction_match") or [] if m.get("sentence")]


register(InductionMatchSection(), before="Circuits")
